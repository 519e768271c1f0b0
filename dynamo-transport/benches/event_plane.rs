//! The event plane's throughput through a real `nats-server` (started here on a free loopback
//! port), against NATS's own publish rate, in the same run:
//!
//! - `raw_nats`: 10,000 messages of the size of a serialised KV event, published with the
//!   bare `async-nats` client and received by a bare subscriber;
//! - `kv_events`: 10,000 `KvEvent`s (four blocks each) published with `NatsEvents` and received
//!   decoded from its subscription, as a router's `feed` gets them.
//!
//! Both keep their connections and subscription across iterations.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dynamo_core::{BlockHasher, BlockSize, KvEvent, KvEventData, StorageTier, WorkerId};
use dynamo_transport::events::{EventPlane, NatsEvents};
use dynamo_transport::local::LocalNats;
use futures::StreamExt;
use tokio::runtime::Runtime;

const EVENTS: usize = 10_000;

fn event(event_id: u64) -> KvEvent {
    let block_size = BlockSize::new(16).expect("not zero");
    let tokens: Vec<u32> = (0..64).map(|t| t + event_id as u32 * 64).collect();
    KvEvent {
        worker: WorkerId::new(1),
        event_id,
        tier: StorageTier::Device,
        data: KvEventData::Stored {
            parent: None,
            block_size,
            blocks: BlockHasher::new(block_size).hash_blocks(&tokens),
        },
    }
}

fn benches(c: &mut Criterion) {
    let runtime = Runtime::new().expect("a runtime");
    // The NATS subscriptions unsubscribe on a task when dropped, at the end: in the runtime.
    let _entered = runtime.enter();
    let nats = LocalNats::start().expect("nats-server starts (Debian package nats-server)");
    let events: Vec<KvEvent> = (0..EVENTS as u64).map(event).collect();
    let payload = bytes::Bytes::from(serde_json::to_vec(&events[0]).expect("serialised"));
    println!("a KV event of 4 blocks is {} bytes of JSON", payload.len());

    let (raw, mut raw_messages, publisher, mut decoded) = runtime.block_on(async {
        let raw = async_nats::connect(nats.url()).await.expect("connected");
        let raw_messages = raw.subscribe("bench.raw").await.expect("subscribed");
        let publisher = NatsEvents::connect(&nats.url(), "bench")
            .await
            .expect("connected");
        let subscriber = NatsEvents::connect(&nats.url(), "bench")
            .await
            .expect("connected");
        let decoded = subscriber.subscribe::<KvEvent>().await.expect("subscribed");
        raw.flush().await.expect("flushed");
        subscriber.flush().await.expect("flushed");
        (raw, raw_messages, publisher, decoded)
    });

    let mut group = c.benchmark_group("event_plane");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    group.bench_function("raw_nats", |b| {
        b.iter(|| {
            runtime.block_on(async {
                for _ in 0..EVENTS {
                    raw.publish("bench.raw", payload.clone())
                        .await
                        .expect("published");
                }
                raw.flush().await.expect("flushed");
                for _ in 0..EVENTS {
                    raw_messages.next().await.expect("a message");
                }
            });
        });
    });
    group.bench_function("kv_events", |b| {
        b.iter(|| {
            runtime.block_on(async {
                for event in &events {
                    publisher.publish(event).await.expect("published");
                }
                publisher.flush().await.expect("flushed");
                for _ in 0..EVENTS {
                    decoded.next().await.expect("an event").expect("a KV event");
                }
            });
        });
    });
    group.finish();
}

criterion_group!(event_plane, benches);
criterion_main!(event_plane);
