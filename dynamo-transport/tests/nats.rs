//! KV events over a real NATS server (the Debian package `nats-server`, started here on a free
//! loopback port): they arrive whole and in order, a malformed message is skipped, and after the
//! server restarts the router's index receives the new events.

use std::time::{Duration, Instant};

use dynamo_core::{BlockHasher, BlockSize, KvEvent, KvEventData, StorageTier, WorkerId};
use dynamo_transport::Error;
use dynamo_transport::events::{EventPlane, NatsEvents};
use dynamo_transport::local::LocalNats;
use futures::StreamExt;

fn block_size() -> BlockSize {
    BlockSize::new(4).expect("not zero")
}

/// A `Stored` event of worker 1 for one block of `tokens`, after `parent`'s chain.
fn stored(event_id: u64, tokens: &[u32]) -> KvEvent {
    KvEvent {
        worker: WorkerId::new(1),
        event_id,
        tier: StorageTier::Device,
        data: KvEventData::Stored {
            parent: None,
            block_size: block_size(),
            blocks: BlockHasher::new(block_size()).hash_blocks(tokens),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_in_order_and_malformed_messages_are_skipped() {
    let server = LocalNats::start().expect("nats-server starts");
    let publisher = NatsEvents::connect(&server.url(), "test")
        .await
        .expect("connected");
    let subscriber = NatsEvents::connect(&server.url(), "test")
        .await
        .expect("connected");
    let mut events = subscriber.subscribe::<KvEvent>().await.expect("subscribed");

    let sent: Vec<KvEvent> = (0..50).map(|i| stored(i, &[i as u32, 1, 2, 3])).collect();
    for event in &sent[..25] {
        publisher.publish(event).await.expect("published");
    }
    let raw = async_nats::connect(server.url()).await.expect("connected");
    raw.publish(publisher.subject::<KvEvent>(), "not an event".into())
        .await
        .expect("published");
    raw.flush().await.expect("flushed");
    for event in &sent[25..] {
        publisher.publish(event).await.expect("published");
    }
    publisher.flush().await.expect("flushed");

    let mut received = Vec::new();
    let mut malformed = 0;
    // The raw client's message may arrive anywhere among the events: it uses its own
    // connection, and NATS orders messages per connection only.
    while received.len() < sent.len() || malformed == 0 {
        let next = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("events keep coming")
            .expect("the subscription is open");
        match next {
            Ok(event) => received.push(event),
            Err(Error::MalformedMessage { .. }) => malformed += 1,
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(received, sent);
    assert_eq!(malformed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_receives_new_events_after_nats_restarts() {
    let mut server = LocalNats::start().expect("nats-server starts");
    let port = server.port();
    let url = server.url();
    let worker = NatsEvents::connect(&url, "prod").await.expect("connected");
    let router = NatsEvents::connect(&url, "prod").await.expect("connected");
    let mut events = router.subscribe::<KvEvent>().await.expect("subscribed");

    let before = stored(0, &[10, 11, 12, 13]);
    worker.publish(&before).await.expect("published");
    worker.flush().await.expect("flushed");
    let first = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("the event arrives");
    assert_eq!(first.expect("open").expect("well formed"), before);

    server.stop();
    let _restarted = LocalNats::start_on(port).expect("nats-server starts");
    // Both clients reconnect by themselves; publish until the subscriber has the new event.
    let after = stored(1, &[20, 21, 22, 23]);
    let started = Instant::now();
    loop {
        let _ = worker.publish(&after).await;
        let _ = worker.flush().await;
        if let Ok(Some(Ok(event))) =
            tokio::time::timeout(Duration::from_millis(100), events.next()).await
        {
            assert_eq!(event, after);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no event after the restart"
        );
    }
}
