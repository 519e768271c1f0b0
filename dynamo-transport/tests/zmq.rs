//! The ZMQ subscriber against an engine-side PUB socket and ROUTER replay socket built here,
//! sending messages written byte by byte from the documented vLLM / SGLang format: on the
//! `zeromq` crate, and (with the feature `libzmq`, a Python with pyzmq at hand) on libzmq, the
//! C library the engines publish with.

mod msgpack;

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dynamo_core::{
    BlockHasher, BlockSize, HashedBlock, KvEvent, KvEventData, StorageTier, WorkerId,
};
use dynamo_transport::Error;
use dynamo_transport::engine_events::{EngineEventSource, EngineEventStream};
use futures::{Stream, StreamExt};
use msgpack::{NIL, array, batch, binary, concat, int, small, string, tokens, uint};
use parking_lot::Mutex;
use zeromq::{PubSocket, RouterSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

fn block_size() -> BlockSize {
    BlockSize::new(4).expect("not zero")
}

/// `["BlockStored", [hash], parent, tokens, 4, nil, "GPU"]`, hashes already encoded.
fn stored(hash: Vec<u8>, parent: Option<Vec<u8>>, ids: &[u8]) -> Vec<u8> {
    concat(&[
        array(7),
        string("BlockStored"),
        concat(&[array(1), hash]),
        parent.unwrap_or(vec![NIL]),
        tokens(ids),
        small(4),
        vec![NIL],
        string("GPU"),
    ])
}

/// `["BlockRemoved", [hash], "GPU"]`.
fn removed(hash: u64) -> Vec<u8> {
    concat(&[
        array(3),
        string("BlockRemoved"),
        concat(&[array(1), uint(hash)]),
        string("GPU"),
    ])
}

fn message(frames: Vec<Bytes>) -> ZmqMessage {
    ZmqMessage::try_from(frames).expect("frames")
}

/// Every message an engine published (or meant to), by sequence number, kept for replay.
type Sent = Arc<Mutex<Vec<(i64, Vec<u8>)>>>;

/// An engine's two sockets: every message it publishes is kept for replay.
struct Engine {
    publisher: PubSocket,
    endpoint: String,
    replay_endpoint: String,
    sent: Sent,
    /// The task that answers on the replay socket, and what stops it.
    replays: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

/// A free loopback port.
const ANY_PORT: &str = "tcp://127.0.0.1:0";

impl EngineSide for Engine {
    async fn start(at: Option<(&str, &str)>) -> Self {
        let (at, replay_at) = at.unwrap_or((ANY_PORT, ANY_PORT));
        let mut publisher = PubSocket::new();
        let endpoint = publisher.bind(at).await.expect("bound").to_string();
        let mut router = RouterSocket::new();
        let replay_endpoint = router.bind(replay_at).await.expect("bound").to_string();
        let sent: Sent = Arc::default();
        let buffer = Arc::clone(&sent);
        let (stop_replays, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let replays = tokio::spawn(async move {
            loop {
                let request = tokio::select! {
                    request = router.recv() => request,
                    _ = &mut stopped => break,
                };
                let Ok(request) = request else { break };
                // [identity, empty delimiter, first sequence number]
                let frames = request.into_vec();
                let [identity, _, start] = &frames[..] else {
                    continue;
                };
                let start = i64::from_be_bytes(start[..].try_into().expect("8 bytes"));
                let replies: Vec<(i64, Vec<u8>)> = buffer
                    .lock()
                    .iter()
                    .filter(|(sequence, _)| *sequence >= start)
                    .cloned()
                    .collect();
                for (sequence, payload) in replies.into_iter().chain([(-1, Vec::new())]) {
                    let reply = message(vec![
                        identity.clone(),
                        Bytes::new(),
                        Bytes::copy_from_slice(&sequence.to_be_bytes()),
                        Bytes::from(payload),
                    ]);
                    if router.send(reply).await.is_err() {
                        break;
                    }
                }
            }
            let errors = router.close().await;
            assert!(errors.is_empty(), "{errors:?}");
        });
        Engine {
            publisher,
            endpoint,
            replay_endpoint,
            sent,
            replays: Some((stop_replays, replays)),
        }
    }

    fn endpoints(&self) -> (&str, &str) {
        (&self.endpoint, &self.replay_endpoint)
    }

    async fn stop(mut self) {
        if let Some((stop, replays)) = self.replays.take() {
            let _ = stop.send(());
            replays.await.expect("the replay socket closed");
        }
        let errors = self.publisher.close().await;
        assert!(errors.is_empty(), "{errors:?}");
    }

    async fn probe(&mut self, length: usize) {
        let frames = vec![
            Bytes::from_static(b"kv-events"),
            Bytes::from(vec![0; length]),
            Bytes::from(batch(&[])),
        ];
        self.publisher
            .send(message(frames))
            .await
            .expect("published");
    }

    async fn send(&mut self, sequence: i64, payload: Vec<u8>, lost: bool) {
        self.sent.lock().push((sequence, payload.clone()));
        if !lost {
            let frames = vec![
                Bytes::from_static(b"kv-events"),
                Bytes::copy_from_slice(&sequence.to_be_bytes()),
                Bytes::from(payload),
            ];
            self.publisher
                .send(message(frames))
                .await
                .expect("published");
        }
    }
}

/// An engine's side of the sockets, as a test drives it.
trait EngineSide: Sized {
    /// An engine publishing at `at`'s first address and answering replays at its second, else
    /// on free loopback ports.
    async fn start(at: Option<(&str, &str)>) -> Self;

    /// Where it publishes, and where it answers replay requests.
    fn endpoints(&self) -> (&str, &str);

    /// Stop it as its process ending does: its sockets close.
    async fn stop(self);

    /// A message on the test's topic whose sequence frame is `length` bytes, not 8.
    async fn probe(&mut self, length: usize);

    /// Keep message `sequence` for replay, and publish it unless it is to be lost.
    async fn send(&mut self, sequence: i64, payload: Vec<u8>, lost: bool);
}

/// Wait until a subscriber's subscription has reached the PUB socket (until then ZMQ
/// drops what is published), by publishing probes until one comes out of `events`.
///
/// A probe's sequence frame is not 8 bytes: the subscriber yields
/// [`Error::EngineEventSequence`] for it and leaves its decoder as it was, so the test's
/// messages still start the sequence. A last probe of another length fences off the probes
/// still in flight: ZMQ keeps one connection's messages in order.
async fn wait_for_subscriber(
    engine: &mut impl EngineSide,
    events: &mut (impl Stream<Item = Result<KvEvent, Error>> + Unpin),
) {
    const PROBE: usize = 1;
    const FENCE: usize = 2;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        engine.probe(PROBE).await;
        // The pace of the probes; the loop ends on the condition, not on this wait.
        match tokio::time::timeout(Duration::from_millis(20), events.next()).await {
            Ok(Some(Err(Error::EngineEventSequence { length: PROBE }))) => break,
            Ok(other) => panic!("a probe, not {other:?}"),
            Err(_) => assert!(
                Instant::now() < deadline,
                "no subscription reached the publisher within 10 s"
            ),
        }
    }
    engine.probe(FENCE).await;
    loop {
        match next(events).await {
            Err(Error::EngineEventSequence { length: FENCE }) => return,
            Err(Error::EngineEventSequence { length: PROBE }) => continue,
            other => panic!("a probe, not {other:?}"),
        }
    }
}

/// Worker 7's events from `engine` on the test's topic (replayed from its replay socket when
/// `replay`), once the subscription has reached it.
async fn subscribe(engine: &mut impl EngineSide, replay: bool) -> Pin<Box<EngineEventStream>> {
    let (endpoint, replay_endpoint) = engine.endpoints();
    let mut source =
        EngineEventSource::new(endpoint, WorkerId::new(7), block_size()).with_topic("kv-events");
    if replay {
        source = source.with_replay(replay_endpoint);
    }
    let mut events = Box::pin(source.subscribe().expect("subscribed"));
    wait_for_subscriber(engine, &mut events).await;
    events
}

async fn next(
    stream: &mut (impl Stream<Item = Result<KvEvent, Error>> + Unpin),
) -> Result<KvEvent, Error> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an item in time")
        .expect("the stream goes on")
}

fn stored_blocks(event: &KvEvent) -> Vec<HashedBlock> {
    match &event.data {
        KvEventData::Stored { blocks, .. } => blocks.clone(),
        other => panic!("not stored: {other:?}"),
    }
}

/// Our hashes of the chain of blocks 1..=16, four tokens each.
fn chain() -> Vec<HashedBlock> {
    let tokens: Vec<u32> = (1..=16).collect();
    BlockHasher::new(block_size()).hash_blocks(&tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_messages_are_replayed_in_order_and_malformed_ones_skipped() {
    let mut engine = Engine::start(None).await;
    let mut events = subscribe(&mut engine, true).await;

    // Hashes as the engines send them: unsigned, signed, bytes.
    engine
        .send(0, batch(&[stored(uint(100), None, &[1, 2, 3, 4])]), false)
        .await;
    engine
        .send(
            1,
            batch(&[stored(int(101), Some(uint(100)), &[5, 6, 7, 8])]),
            false,
        )
        .await;
    let bytes_hash = binary(&102u64.to_be_bytes());
    engine
        .send(
            2,
            batch(&[stored(bytes_hash.clone(), Some(int(101)), &[9, 10, 11, 12])]),
            true,
        )
        .await;
    engine.send(3, batch(&[removed(100)]), false).await;

    let all = chain();
    let mut received = Vec::new();
    for _ in 0..4 {
        received.push(next(&mut events).await.expect("an event"));
    }
    let ids: Vec<u64> = received.iter().map(|event| event.event_id).collect();
    assert_eq!(
        ids,
        [0, 1, 2, 3],
        "in the engine's order, the replayed one in its place"
    );
    assert_eq!(stored_blocks(&received[0]), all[0..1]);
    assert_eq!(stored_blocks(&received[1]), all[1..2]);
    assert_eq!(
        stored_blocks(&received[2]),
        all[2..3],
        "message 2 came from the replay"
    );
    assert_eq!(
        received[3].data,
        KvEventData::Removed {
            blocks: vec![all[0].sequence]
        }
    );

    // A payload that is not msgpack is an error, and the messages after it still come.
    engine.send(4, vec![0xc1, 0xff], false).await;
    engine
        .send(
            5,
            batch(&[stored(uint(103), Some(bytes_hash), &[13, 14, 15, 16])]),
            false,
        )
        .await;
    let error = next(&mut events).await.expect_err("a malformed message");
    assert!(
        matches!(error, Error::MalformedEngineEvent { .. }),
        "{error}"
    );
    let after = next(&mut events).await.expect("the next message");
    assert_eq!(
        (after.event_id, stored_blocks(&after)),
        (4, all[3..4].to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_replay_socket_a_gap_is_reported_as_lost() {
    let mut engine = Engine::start(None).await;
    let mut events = subscribe(&mut engine, false).await;

    engine
        .send(10, batch(&[stored(uint(100), None, &[1, 2, 3, 4])]), false)
        .await;
    engine.send(11, batch(&[]), true).await;
    engine
        .send(
            12,
            batch(&[stored(uint(101), Some(uint(100)), &[5, 6, 7, 8])]),
            false,
        )
        .await;
    let all = chain();
    assert_eq!(
        stored_blocks(&next(&mut events).await.expect("an event")),
        all[0..1]
    );
    let gap = next(&mut events).await.expect_err("a gap");
    assert!(
        matches!(
            gap,
            Error::EngineEventsLost {
                expected: 11,
                received: 12
            }
        ),
        "{gap}"
    );
    assert_eq!(
        stored_blocks(&next(&mut events).await.expect("an event")),
        all[1..2]
    );
}

#[tokio::test]
async fn a_bad_endpoint_is_an_error() {
    let source = EngineEventSource::new("not-an-endpoint", WorkerId::new(1), block_size());
    let error = source.subscribe().expect_err("refused");
    assert!(matches!(error, Error::Socket { .. }), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_fails_other_than_refused_is_yielded_and_tried_again() {
    // Where the engine will publish, something that is not ZMQ accepts and hangs up: the
    // handshake fails, which the socket does not retry by itself. It resets each connection
    // rather than closing it, so that no closed connection waits on the port (TIME_WAIT) and
    // the engine can bind it next.
    let impostor = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bound");
    let endpoint = format!("tcp://{}", impostor.local_addr().expect("an address"));
    let hanging_up = tokio::spawn(async move {
        while let Ok((connection, _)) = impostor.accept().await {
            let _ = connection.set_zero_linger();
            drop(connection);
        }
    });
    let source = EngineEventSource::new(endpoint.clone(), WorkerId::new(7), block_size())
        .with_topic("kv-events");
    let mut events = Box::pin(source.subscribe().expect("subscribed"));
    let error = next(&mut events).await.expect_err("the failed handshake");
    assert!(matches!(error, Error::Socket { .. }), "{error}");

    // The engine comes up on that port: the subscriber gets there (a failure met before the
    // impostor left may still be in the stream).
    hanging_up.abort();
    let _ = hanging_up.await;
    let mut engine = Engine::start(Some((&endpoint, ANY_PORT))).await;
    let mut events = events
        .as_mut()
        .filter(|item| std::future::ready(!matches!(item, Err(Error::Socket { .. }))));
    wait_for_subscriber(&mut engine, &mut events).await;
    engine
        .send(0, batch(&[stored(uint(100), None, &[1, 2, 3, 4])]), false)
        .await;
    let event = next(&mut events).await.expect("the store");
    assert_eq!(stored_blocks(&event), chain()[0..1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_after_a_lost_parent_and_unknown_offloads_are_counted_not_refused() {
    let mut engine = Engine::start(None).await;
    let mut events = subscribe(&mut engine, false).await;
    // The probes were refused, each counted.
    let probes = events.counts().refused;

    engine
        .send(0, batch(&[stored(uint(100), None, &[1, 2, 3, 4])]), false)
        .await;
    engine
        .send(
            1,
            batch(&[stored(uint(101), Some(uint(100)), &[5, 6, 7, 8])]),
            true,
        )
        .await;
    // After the lost message: a store under its block, a chunk offloaded by its hash alone
    // (`["BlockStored", [hash], nil, [], 0, nil, "CPU"]`) that was never stored, and a removal.
    let offloaded = concat(&[
        array(7),
        string("BlockStored"),
        concat(&[array(1), uint(999)]),
        vec![NIL],
        tokens(&[]),
        small(0),
        vec![NIL],
        string("CPU"),
    ]);
    let step = batch(&[
        stored(uint(102), Some(uint(101)), &[9, 10, 11, 12]),
        offloaded,
        removed(100),
    ]);
    engine.send(2, step, false).await;
    let all = chain();
    assert_eq!(
        stored_blocks(&next(&mut events).await.expect("an event")),
        all[0..1]
    );
    let gap = next(&mut events).await.expect_err("a gap");
    assert!(matches!(gap, Error::EngineEventsLost { .. }), "{gap}");
    // The removal applies: the message was not refused.
    let removal = next(&mut events).await.expect("the removal");
    assert_eq!(
        removal.data,
        KvEventData::Removed {
            blocks: vec![all[0].sequence]
        }
    );
    let counts = events.counts();
    assert_eq!(
        (counts.unknown_parent, counts.tokenless, counts.refused),
        (1, 1, probes)
    );
}

/// The next four items: the clears of every tier that follow an engine restart.
async fn expect_cleared(events: &mut (impl Stream<Item = Result<KvEvent, Error>> + Unpin)) {
    let mut tiers = Vec::new();
    for _ in StorageTier::ALL {
        let event = next(events).await.expect("a clear");
        assert_eq!(event.data, KvEventData::Cleared, "{event:?}");
        tiers.push(event.tier);
    }
    assert_eq!(tiers, StorageTier::ALL);
}

/// Three messages with the second lost on the way, fetched from the replay socket; then the
/// engine stops, its blocks are cleared, and a new one on the same port is followed afresh.
async fn replayed_then_restarted<E: EngineSide>() {
    let mut engine = E::start(None).await;
    let mut events = subscribe(&mut engine, true).await;
    engine
        .send(0, batch(&[stored(uint(100), None, &[1, 2, 3, 4])]), false)
        .await;
    engine
        .send(
            1,
            batch(&[stored(uint(101), Some(uint(100)), &[5, 6, 7, 8])]),
            true,
        )
        .await;
    engine.send(2, batch(&[removed(100)]), false).await;
    let all = chain();
    let stored_first = next(&mut events).await.expect("stored");
    assert_eq!(stored_blocks(&stored_first), all[0..1]);
    let replayed = next(&mut events).await.expect("replayed");
    assert_eq!(
        stored_blocks(&replayed),
        all[1..2],
        "from the replay socket"
    );
    let removal = next(&mut events).await.expect("the removal");
    assert_eq!(
        removal.data,
        KvEventData::Removed {
            blocks: vec![all[0].sequence]
        }
    );

    // The engine stops: its blocks are gone, and the stream says so.
    let (endpoint, replay_endpoint) = engine.endpoints();
    let (endpoint, replay_endpoint) = (endpoint.to_owned(), replay_endpoint.to_owned());
    engine.stop().await;
    expect_cleared(&mut events).await;
    assert_eq!(events.counts().restarts, 1);

    // A new engine on the same ports: the subscriber reconnects, and the new engine's
    // messages, numbered from 0 again, are decoded afresh (block 102 under 101 would have been
    // known before; now its parent is unknown and it is skipped, not indexed under a stale
    // chain); a message it loses is fetched from its own replay socket.
    let mut engine = E::start(Some((&endpoint, &replay_endpoint))).await;
    wait_for_subscriber(&mut engine, &mut events).await;
    engine
        .send(
            0,
            batch(&[stored(uint(102), Some(uint(101)), &[9, 10, 11, 12])]),
            false,
        )
        .await;
    engine
        .send(1, batch(&[stored(uint(200), None, &[1, 2, 3, 4])]), false)
        .await;
    engine
        .send(
            2,
            batch(&[stored(uint(201), Some(uint(200)), &[5, 6, 7, 8])]),
            true,
        )
        .await;
    engine.send(3, batch(&[removed(200)]), false).await;
    let event = next(&mut events).await.expect("the new engine's store");
    assert_eq!(stored_blocks(&event), all[0..1]);
    let replayed = next(&mut events).await.expect("replayed by the new engine");
    assert_eq!(stored_blocks(&replayed), all[1..2]);
    let removal = next(&mut events).await.expect("the removal");
    assert_eq!(
        removal.data,
        KvEventData::Removed {
            blocks: vec![all[0].sequence]
        }
    );
    let counts = events.counts();
    assert_eq!((counts.restarts, counts.unknown_parent), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_restarts_is_cleared_and_followed_again() {
    replayed_then_restarted::<Engine>().await;
}

/// The same against libzmq's PUB and ROUTER sockets, the engine killed with SIGKILL.
#[cfg(feature = "libzmq")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_libzmq_a_lost_message_is_replayed_and_a_killed_engine_cleared() {
    replayed_then_restarted::<LibzmqEngine>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_numbers_that_go_back_are_a_restart() {
    let mut engine = Engine::start(None).await;
    let mut events = subscribe(&mut engine, true).await;
    for sequence in [5, 6] {
        engine.send(sequence, batch(&[removed(1)]), false).await;
    }
    // A message numbered below the last one: a new engine behind the same address, met before
    // the old one was seen to go. No replay is asked for; the blocks are cleared.
    engine
        .send(0, batch(&[stored(uint(100), None, &[1, 2, 3, 4])]), false)
        .await;
    expect_cleared(&mut events).await;
    let event = next(&mut events).await.expect("the store");
    assert_eq!(stored_blocks(&event), chain()[0..1]);
    let counts = events.counts();
    assert_eq!((counts.restarts, counts.unknown_removed), (1, 2));
}

/// The engine's sockets on libzmq: `tests/libzmq_engine.py`, under the Python that
/// `DYNAMO_ZMQ_PYTHON` names, else CI's (`~/.cache/dynamo-ci/venv/bin/python`), which must
/// have pyzmq.
#[cfg(feature = "libzmq")]
struct LibzmqEngine {
    process: tokio::process::Child,
    commands: tokio::process::ChildStdin,
    answers: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    endpoint: String,
    replay_endpoint: String,
}

#[cfg(feature = "libzmq")]
impl EngineSide for LibzmqEngine {
    async fn start(at: Option<(&str, &str)>) -> Self {
        use std::path::PathBuf;
        use std::process::Stdio;
        use tokio::io::{AsyncBufReadExt, BufReader};

        let python = std::env::var_os("DYNAMO_ZMQ_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let home = std::env::var_os("HOME").expect("HOME is set");
                PathBuf::from(home).join(".cache/dynamo-ci/venv/bin/python")
            });
        // The package's folder as cargo tells the running test, else as it was at build time:
        // a binary reused from a target folder that another checkout shares finds this one's
        // script, not the other's (which may be gone).
        let package = std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
        let script = package.join("tests/libzmq_engine.py");
        let mut process = tokio::process::Command::new(&python)
            .arg("-B")
            .arg(script)
            .args(at.into_iter().flat_map(|(at, replay_at)| [at, replay_at]))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("{} does not start: {error}", python.display()));
        let commands = process.stdin.take().expect("piped");
        let mut answers = BufReader::new(process.stdout.take().expect("piped")).lines();
        let addresses = tokio::time::timeout(Duration::from_secs(30), answers.next_line())
            .await
            .expect("the engine's addresses in time")
            .expect("its output")
            .unwrap_or_else(|| {
                panic!(
                    "the libzmq engine did not start: {} needs pyzmq (`pip install \
                     pyzmq==27.2.0`; DYNAMO_ZMQ_PYTHON names another Python)",
                    python.display()
                )
            });
        let (endpoint, replay_endpoint) = addresses.split_once(' ').expect("two addresses");
        LibzmqEngine {
            endpoint: endpoint.to_owned(),
            replay_endpoint: replay_endpoint.to_owned(),
            process,
            commands,
            answers,
        }
    }

    fn endpoints(&self) -> (&str, &str) {
        (&self.endpoint, &self.replay_endpoint)
    }

    /// Killed as a crash kills it (SIGKILL).
    async fn stop(mut self) {
        self.process.kill().await.expect("killed");
    }

    async fn probe(&mut self, length: usize) {
        self.command(format!("probe {length}")).await;
    }

    async fn send(&mut self, sequence: i64, payload: Vec<u8>, lost: bool) {
        let hex: String = payload.iter().map(|byte| format!("{byte:02x}")).collect();
        let command = if lost { "keep" } else { "publish" };
        self.command(format!("{command} {sequence} {hex}")).await;
    }
}

#[cfg(feature = "libzmq")]
impl LibzmqEngine {
    /// Send the Python side one command and wait for its `ok`.
    async fn command(&mut self, line: String) {
        use tokio::io::AsyncWriteExt;

        self.commands
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("the engine takes commands");
        let answer = tokio::time::timeout(Duration::from_secs(10), self.answers.next_line())
            .await
            .expect("an answer in time")
            .expect("its output");
        assert_eq!(answer.as_deref(), Some("ok"), "to {line}");
    }
}
