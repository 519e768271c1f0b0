//! The ZMQ sockets of an engine's KV events: the subscriber, and the replay request that
//! recovers lost messages.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use dynamo_core::{BlockSize, KvEvent, WorkerId};
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use zeromq::{
    DealerSocket, Endpoint, Socket, SocketEvent, SocketOptions, SocketRecv, SocketSend, SubSocket,
    ZmqMessage,
};

use super::EngineEventDecoder;
use crate::Error;

/// Decoded events (and errors) buffered for a slow consumer. When it is full the subscriber
/// stops reading, the engine's publisher drops messages at its high-water mark, and the
/// sequence gap that follows is replayed.
const BUFFER: usize = 1024;
/// The pause after the first connection attempt that failed other than by being refused; it
/// doubles after each such failure, up to [`LAST_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(30);
/// How long a replay reply may take before the replay is given up.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(2);
/// The sequence number that ends a replay.
const END_OF_REPLAY: i64 = -1;

/// One engine's KV event publisher (vLLM `--kv-events-config`, SGLang the same), as a stream
/// of our [`KvEvent`]s for one worker.
///
/// The subscriber connects to the engine's PUB socket (waiting while the engine is not up yet)
/// and decodes each message with an [`EngineEventDecoder`]. When a message's sequence number
/// skips ahead, it asks the engine's ROUTER replay socket for the missing ones (one frame: the
/// first missing sequence number, 8 bytes big-endian; the replies are `[sequence, payload]`
/// and end with sequence −1) and decodes them first, so events come out in the engine's order.
/// Without a replay socket, or when the replay does not cover the gap, the stream yields
/// [`Error::EngineEventsLost`] and goes on. A malformed message yields its error and is
/// skipped; the connection and the messages after it are unaffected.
///
/// What the decoder skipped or refused is counted in the stream's [`EngineEventCounts`].
///
/// # Engine restarts
///
/// When the engine's publisher goes away (the engine stopped, crashed or is restarting), the
/// stream yields a [`KvEventData::Cleared`](dynamo_core::KvEventData::Cleared) for every
/// tier, since the blocks went with the process, and the subscriber reconnects, retrying with
/// a backoff that grows to 30 s, until the engine publishes again; what it publishes then is
/// decoded afresh. A message whose sequence number goes back (a new engine, counting from 0
/// again, met before its predecessor was seen to go) clears the same way. Each is counted in
/// [`EngineEventCounts::restarts`]. A connection that drops while the engine lives on (rare:
/// ZMQ connections close when a process does) costs the same clear: the index forgets blocks
/// the engine still holds until they are stored again, rather than keep blocks it may not.
#[derive(Debug, Clone)]
pub struct EngineEventSource {
    endpoint: String,
    replay: Option<String>,
    topic: String,
    worker: WorkerId,
    block_size: BlockSize,
}

impl EngineEventSource {
    /// The engine publishing at `endpoint` (for example `tcp://127.0.0.1:5557`, vLLM's
    /// default) is `worker`, with blocks of `block_size` tokens; all topics.
    pub fn new(endpoint: impl Into<String>, worker: WorkerId, block_size: BlockSize) -> Self {
        EngineEventSource {
            endpoint: endpoint.into(),
            replay: None,
            topic: String::new(),
            worker,
            block_size,
        }
    }

    /// Recover lost messages from the engine's replay socket at `endpoint`.
    pub fn with_replay(mut self, endpoint: impl Into<String>) -> Self {
        self.replay = Some(endpoint.into());
        self
    }

    /// Take only messages whose topic starts with `topic`.
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }

    /// Subscribe: a task connects (retrying while the engine is not listening) and the events
    /// follow on the stream until it is dropped. Call it within a Tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Error::Socket`] when the endpoint is not a ZMQ address. A connection that fails other
    /// than by being refused is yielded on the stream, and tried again after a pause (100 ms,
    /// doubling to 30 s).
    pub fn subscribe(self) -> Result<EngineEventStream, Error> {
        self.endpoint.parse::<Endpoint>().map_err(socket_error)?;
        let (items, received) = mpsc::channel(BUFFER);
        let (counts_sender, counts) = watch::channel(EngineEventCounts::default());
        let subscriber = Subscriber {
            decoder: EngineEventDecoder::new(self.worker, self.block_size),
            worker: self.worker,
            endpoint: self.endpoint,
            away: false,
            replay_endpoint: self.replay,
            replay: None,
            items,
            counts: counts_sender,
        };
        tokio::spawn(subscriber.run(self.topic));
        Ok(EngineEventStream { received, counts })
    }
}

/// What an [`EngineEventSource`]'s subscriber skipped or refused since it subscribed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineEventCounts {
    /// Stored and removed events of KV cache groups the decoder does not follow, skipped
    /// ([`Decoded::other_groups`](super::Decoded::other_groups)).
    pub other_groups: u64,
    /// Removed blocks never seen stored (stored before the subscriber connected, or in lost
    /// messages), ignored ([`Decoded::unknown_removed`](super::Decoded::unknown_removed)).
    pub unknown_removed: u64,
    /// Blocks of stored events without token ids that the decoder never saw stored with them,
    /// skipped ([`Decoded::tokenless`](super::Decoded::tokenless)).
    pub tokenless: u64,
    /// Stored blocks whose parent the decoder does not know, skipped
    /// ([`Decoded::unknown_parent`](super::Decoded::unknown_parent)).
    pub unknown_parent: u64,
    /// Blocks of stored events whose token ids do not fill them, skipped
    /// ([`Decoded::misaligned`](super::Decoded::misaligned)).
    pub misaligned: u64,
    /// Blocks of stored and removed events of a medium the decoder does not know, skipped
    /// ([`Decoded::unknown_medium`](super::Decoded::unknown_medium)).
    pub unknown_medium: u64,
    /// Messages refused whole (each also yielded as its error on the stream).
    pub refused: u64,
    /// Times the engine was found restarted, each clearing every block the stream had told
    /// of: its publisher went away, or a message's sequence number went back.
    pub restarts: u64,
}

/// The events an [`EngineEventSource`] receives, in the engine's order, with the problems met
/// on the way; the subscriber stops when this is dropped.
///
/// # Cancel safety
///
/// Polling it is cancel safe: an item not yet taken stays buffered for the next poll.
#[derive(Debug)]
pub struct EngineEventStream {
    received: mpsc::Receiver<Result<KvEvent, Error>>,
    counts: watch::Receiver<EngineEventCounts>,
}

impl EngineEventStream {
    /// The subscriber's counts as of the last message it decoded (messages decoded but not
    /// yet taken from the stream included).
    pub fn counts(&self) -> EngineEventCounts {
        *self.counts.borrow()
    }

    /// A handle on the counts that outlives the stream being consumed: it changes after each
    /// message that skips or refuses something and at each restart, and its `changed()` fails
    /// once the subscriber has stopped.
    pub fn counts_view(&self) -> watch::Receiver<EngineEventCounts> {
        self.counts.clone()
    }
}

impl Stream for EngineEventStream {
    type Item = Result<KvEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.received.poll_recv(context)
    }
}

fn socket_error(error: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::socket(error)
}

/// The subscriber stops: the consumer dropped the stream (or, before the first connection,
/// the socket could not keep the subscription).
struct Gone;

struct Subscriber {
    decoder: EngineEventDecoder,
    worker: WorkerId,
    endpoint: String,
    /// The publisher went away and has not come back yet.
    away: bool,
    replay_endpoint: Option<String>,
    /// Connected on the first gap, dropped when it fails.
    replay: Option<DealerSocket>,
    items: mpsc::Sender<Result<KvEvent, Error>>,
    counts: watch::Sender<EngineEventCounts>,
}

impl Subscriber {
    async fn run(mut self, topic: String) {
        // The connection waits as long as the engine takes to listen, and the socket reconnects
        // by itself when the engine goes.
        let mut options = SocketOptions::default();
        options.no_connect_timeout();
        let mut socket = SubSocket::with_options(options);
        let mut monitor = socket.monitor();
        if self.connect(&mut socket, &topic).await.is_err() {
            return;
        }
        let mut watching = true;
        loop {
            let outcome = tokio::select! {
                // What the old connection delivered comes before the news that it went.
                biased;
                message = socket.recv() => match message {
                    Ok(message) => self.receive(message.into_vec()).await,
                    Err(error) => self.send(Err(socket_error(error))).await,
                },
                event = monitor.next(), if watching => match event {
                    Some(event) => self.on_connection(event).await,
                    None => {
                        watching = false;
                        Ok(())
                    }
                },
                () = self.items.closed() => return,
            };
            if outcome.is_err() {
                return;
            }
        }
    }

    /// Subscribe `socket` to `topic` and connect it. A refused connection is retried within
    /// the socket's `connect`; another failure (a handshake that fails, a name that does not
    /// resolve yet) is yielded, and tried again after a pause. Fails only when the consumer is
    /// gone, or the subscription cannot be kept.
    async fn connect(&self, socket: &mut SubSocket, topic: &str) -> Result<(), Gone> {
        // Kept by the socket, and sent to each connection it makes.
        if let Err(error) = socket.subscribe(topic).await {
            self.send(Err(socket_error(error))).await?;
            return Err(Gone);
        }
        let mut pause = FIRST_RETRY;
        loop {
            let connected = tokio::select! {
                connected = socket.connect(&self.endpoint) => connected,
                () = self.items.closed() => return Err(Gone),
            };
            let Err(error) = connected else {
                return Ok(());
            };
            self.send(Err(socket_error(error))).await?;
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.items.closed() => return Err(Gone),
            }
            pause = (pause * 2).min(LAST_RETRY);
        }
    }

    /// What the socket's monitor says of the connection to the engine's publisher: when it
    /// goes, the engine has stopped or is restarting; when it comes back, the socket has
    /// reconnected.
    async fn on_connection(&mut self, event: SocketEvent) -> Result<(), Gone> {
        match event {
            SocketEvent::Disconnected(_) if !self.away => {
                self.away = true;
                self.restarted("the engine's KV event publisher went away")
                    .await
            }
            SocketEvent::Connected(..) if self.away => {
                self.away = false;
                tracing::info!(
                    worker = %self.worker,
                    endpoint = self.endpoint,
                    "reconnected to the engine's KV event publisher"
                );
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The engine restarted, or is restarting: the index drops its blocks, and its messages
    /// are decoded afresh.
    async fn restarted(&mut self, why: &str) -> Result<(), Gone> {
        tracing::warn!(
            worker = %self.worker,
            endpoint = self.endpoint,
            "{why}: the engine restarted or stopped, so its blocks leave the index until it \
             stores them again"
        );
        self.counts.send_modify(|counts| counts.restarts += 1);
        // The replay socket's peer went with the old engine: the next gap connects afresh.
        self.replay = None;
        for event in self.decoder.engine_restarted() {
            self.send(Ok(event)).await?;
        }
        Ok(())
    }

    async fn send(&self, item: Result<KvEvent, Error>) -> Result<(), Gone> {
        self.items.send(item).await.map_err(|_| Gone)
    }

    /// One live message: replay what was missed before it, then decode it.
    async fn receive(&mut self, frames: Vec<Bytes>) -> Result<(), Gone> {
        let sequence = frames
            .get(1)
            .and_then(|frame| <[u8; 8]>::try_from(&frame[..]).ok());
        let sequence = sequence.map(i64::from_be_bytes);
        if let (Some(received), Some(expected)) = (sequence, self.decoder.expected_sequence()) {
            if received > expected {
                self.recover(expected, received).await?;
            } else if received < expected {
                self.restarted("the engine's KV event sequence numbers began again")
                    .await?;
            }
        }
        let frames: Vec<&[u8]> = frames.iter().map(|frame| &frame[..]).collect();
        self.decode(&frames, sequence).await
    }

    async fn decode(&mut self, frames: &[&[u8]], sequence: Option<i64>) -> Result<(), Gone> {
        match self.decoder.decode(frames) {
            Ok(decoded) => {
                let skipped = [
                    decoded.other_groups,
                    decoded.unknown_removed,
                    decoded.tokenless,
                    decoded.unknown_parent,
                    decoded.misaligned,
                    decoded.unknown_medium,
                ];
                if skipped.iter().any(|&count| count > 0) {
                    let [
                        other_groups,
                        unknown_removed,
                        tokenless,
                        unknown_parent,
                        misaligned,
                        unknown_medium,
                    ] = skipped.map(|count| count as u64);
                    self.counts.send_modify(|counts| {
                        counts.other_groups += other_groups;
                        counts.unknown_removed += unknown_removed;
                        counts.tokenless += tokenless;
                        counts.unknown_parent += unknown_parent;
                        counts.misaligned += misaligned;
                        counts.unknown_medium += unknown_medium;
                    });
                }
                if let Some((expected, received)) = decoded.gap {
                    // Only when recovery fell short: say so before the events after the gap.
                    self.send(Err(Error::EngineEventsLost { expected, received }))
                        .await?;
                }
                for event in decoded.events {
                    self.send(Ok(event)).await?;
                }
                Ok(())
            }
            Err(error) => {
                if let Some(sequence) = sequence {
                    self.decoder.skip(sequence);
                }
                self.counts.send_modify(|counts| counts.refused += 1);
                self.send(Err(error)).await
            }
        }
    }

    /// Ask the replay socket for `expected..received` and decode what comes back in order.
    /// Whatever it cannot provide shows up as a gap when the live message is decoded.
    async fn recover(&mut self, expected: i64, received: i64) -> Result<(), Gone> {
        let Some(endpoint) = self.replay_endpoint.clone() else {
            return Ok(());
        };
        let replies = match self.replay_from(&endpoint, expected).await {
            Ok(replies) => replies,
            Err(error) => {
                self.replay = None;
                return self.send(Err(error)).await;
            }
        };
        for (sequence, payload) in replies {
            let next = self.decoder.expected_sequence().unwrap_or(expected);
            if sequence != next || sequence >= received {
                continue;
            }
            let sequence_bytes = sequence.to_be_bytes();
            self.decode(&[b"", &sequence_bytes, &payload], Some(sequence))
                .await?;
        }
        Ok(())
    }

    /// The replayed messages from `start` on, as `(sequence, payload)`, until the end marker.
    async fn replay_from(
        &mut self,
        endpoint: &str,
        start: i64,
    ) -> Result<Vec<(i64, Bytes)>, Error> {
        let socket = match &mut self.replay {
            Some(socket) => socket,
            None => {
                let mut socket = DealerSocket::new();
                tokio::time::timeout(REPLAY_TIMEOUT, socket.connect(endpoint))
                    .await
                    .map_err(|_| Error::socket(format!("no replay socket at {endpoint}")))?
                    .map_err(socket_error)?;
                self.replay.insert(socket)
            }
        };
        // A DEALER sends the empty delimiter a REQ socket would add.
        let request = ZmqMessage::try_from(vec![
            Bytes::new(),
            Bytes::copy_from_slice(&start.to_be_bytes()),
        ])
        .map_err(|error| Error::socket(error.to_string()))?;
        tokio::time::timeout(REPLAY_TIMEOUT, socket.send(request))
            .await
            .map_err(|_| {
                Error::socket(format!("the replay socket at {endpoint} takes no request"))
            })?
            .map_err(socket_error)?;
        let mut replies = Vec::new();
        loop {
            let reply = tokio::time::timeout(REPLAY_TIMEOUT, socket.recv())
                .await
                .map_err(|_| {
                    Error::socket(format!("the replay socket at {endpoint} stopped answering"))
                })?
                .map_err(socket_error)?
                .into_vec();
            // [empty delimiter, sequence, payload]; a reply of another shape is skipped.
            let [_, sequence, payload] = &reply[..] else {
                continue;
            };
            let Ok(sequence) = <[u8; 8]>::try_from(&sequence[..]) else {
                continue;
            };
            let sequence = i64::from_be_bytes(sequence);
            if sequence == END_OF_REPLAY {
                return Ok(replies);
            }
            replies.push((sequence, payload.clone()));
        }
    }
}
