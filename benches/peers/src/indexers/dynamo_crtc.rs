//! NVIDIA Dynamo's `ConcurrentRadixTreeCompressed` (`dynamo-kv-router` 1.6.1): the radix tree
//! its thread-pool indexer shares between event lanes and lock-free readers.

use std::sync::Arc;
use std::thread::JoinHandle;

use dynamo_core::{KvEvent, LocalBlockHash as DynamoCoreLocal, SequenceHash};
use dynamo_kv_router::ConcurrentRadixTreeCompressed;
use dynamo_kv_router::indexer::{SyncIndexer, WorkerTask};
use dynamo_kv_router::protocols::{LocalBlockHash, OverlapScores, RouterEvent};

use crate::bench::Indexer;

/// The tree's event application is private: the only way in is [`SyncIndexer::worker`], the
/// loop one event lane of a `ThreadPoolIndexer` runs over a flume channel (it keeps the lane's
/// block-hash lookup on its stack). The adapter runs one such lane on its own thread: `apply`
/// sends the event, `sync` sends a `Flush` and waits for its answer, so ingest times include
/// the channel. Lookups call [`SyncIndexer::find_matches`] directly on the calling thread, as
/// the thread-pool indexer does (`early_exit = false`). Rejected events are only logged by the
/// lane, so the table reports none.
pub struct DynamoCrtc {
    tree: Arc<ConcurrentRadixTreeCompressed>,
    lane: flume::Sender<WorkerTask>,
    thread: Option<JoinHandle<()>>,
}

impl Indexer for DynamoCrtc {
    type Event = Option<RouterEvent>;
    type Query = Vec<LocalBlockHash>;
    type Answer = OverlapScores;

    const NAME: &'static str = "dynamo-kv-router ConcurrentRadixTreeCompressed (1 lane)";

    fn new(_workers: u64) -> Self {
        let tree = Arc::new(ConcurrentRadixTreeCompressed::new());
        let (lane, tasks) = flume::unbounded();
        let shared = Arc::clone(&tree);
        let thread = std::thread::spawn(move || {
            shared
                .worker(tasks, None)
                .expect("the lane runs until terminated");
        });
        DynamoCrtc {
            tree,
            lane,
            thread: Some(thread),
        }
    }

    fn event(&self, event: &KvEvent) -> Option<RouterEvent> {
        Some(super::router_event(event))
    }

    fn query(&self, _sequence: &[SequenceHash], local: &[DynamoCoreLocal]) -> Vec<LocalBlockHash> {
        super::local_hashes(local)
    }

    fn apply(&mut self, event: &mut Option<RouterEvent>) -> bool {
        let event = event.take().expect("each event is applied once");
        self.lane
            .send(WorkerTask::Event(event))
            .expect("the lane is running");
        true
    }

    fn sync(&mut self) {
        let (done, flushed) = tokio::sync::oneshot::channel();
        self.lane
            .send(WorkerTask::Flush(done))
            .expect("the lane is running");
        flushed.blocking_recv().expect("the lane answers a flush");
    }

    fn lookup(&self, query: &mut Vec<LocalBlockHash>) -> OverlapScores {
        self.tree.find_matches(query, false)
    }

    fn depths(&self, answer: &OverlapScores, out: &mut Vec<(u64, u32)>) {
        super::dynamo_depths(answer, out);
    }
}

impl Drop for DynamoCrtc {
    fn drop(&mut self) {
        let _ = self.lane.send(WorkerTask::Terminate);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
