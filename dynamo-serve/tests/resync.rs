//! A router's index that missed a worker's events asks for a snapshot over the event plane and
//! is exact again: the parts `dynamo-serve` wires together (a worker's `KvPublisher`, the
//! index's resync hook, `forward_resyncs` and `answer_resyncs` on an in-process bus).

#[expect(dead_code, reason = "this test uses a part of the shared helpers")]
mod support;

use std::sync::Arc;
use std::time::Duration;

use dynamo_core::{BlockHasher, BlockSize, KvEventData, KvPublisher, StorageTier, WorkerId};
use dynamo_router::{KvIndex, SharedIndex};
use dynamo_transport::events::{
    EventPlane, LocalBus, answer_resyncs, forward_resyncs, publish_all,
};
use futures::StreamExt;
use support::eventually;

const WORKER: WorkerId = WorkerId::new(7);

/// How long a test waits for a condition.
const WITHIN: Duration = Duration::from_secs(10);

#[tokio::test]
async fn an_index_that_missed_events_is_made_exact_by_the_workers_snapshot() {
    let block_size = BlockSize::new(4).expect("not zero");
    let hasher = BlockHasher::new(block_size);
    let bus = LocalBus::new();

    // The router's side: the index, fed from the bus, asking for resyncs on it.
    let (resyncs, requested) = tokio::sync::mpsc::channel(16);
    tokio::spawn(forward_resyncs(bus.clone(), requested));
    let index =
        SharedIndex::from_index(KvIndex::new(block_size).with_resync_hook(Arc::new(resyncs)));
    let events = bus.subscribe().await.expect("subscribed");
    tokio::spawn(index.apply_all(events.filter_map(|event| std::future::ready(event.ok()))));

    // The worker's side: a publisher whose event channel holds two events, so most of a
    // burst is dropped.
    let (sender, received) = tokio::sync::mpsc::channel(2);
    tokio::spawn(publish_all(bus.clone(), received));
    let publisher = KvPublisher::new(WORKER, block_size, Some(sender));
    tokio::spawn(
        answer_resyncs(&bus, publisher.clone())
            .await
            .expect("subscribed"),
    );

    let block = |n: u32| hasher.hash_blocks(&[n, n, n, n])[0];
    let store = |n: u32| KvEventData::Stored {
        parent: None,
        block_size,
        blocks: vec![block(n)],
    };
    // A burst the channel cannot hold: blocks 0..20 stored, then the even ones removed.
    for n in 0..20 {
        publisher.publish(StorageTier::Device, store(n));
    }
    let evens = (0..20).step_by(2).map(|n| block(n).sequence).collect();
    publisher.publish(StorageTier::Device, KvEventData::Removed { blocks: evens });
    assert!(publisher.dropped() > 10, "the burst overflowed the channel");

    let holds = |n: u32| index.overlaps(&[block(n).sequence]).get(WORKER).device == 1;
    // The first event got through; the gap shows at the worker's next event.
    eventually("the first block is indexed", WITHIN, async || holds(0)).await;
    publisher.publish(StorageTier::Device, store(100));

    eventually(
        "the index holds exactly what the worker holds",
        WITHIN,
        async || (0..20).all(|n| holds(n) == (n % 2 == 1)) && holds(100),
    )
    .await;
}
