//! What a Rust service that embeds KV-aware routing looks like from the outside: two crates
//! from the dynamo family, its own workers (echo engines here), and the events they report.

use dynamo_core::{
    BlockHasher, BlockSize, EchoEngine, EngineExt, GenerateRequest, KvEvent, KvEventData,
    StorageTier, WorkerId,
};
use dynamo_router::{KvCost, RouterService, SharedIndex};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let block_size = BlockSize::new(16)?;
    let index = SharedIndex::new(block_size);
    let router = RouterService::builder(block_size)
        .policy(KvCost::default())
        .kv_events(index.clone())
        .build();
    for id in 1..=4 {
        router.insert_worker(WorkerId::new(id), EchoEngine::new());
    }

    // Worker 3 reports that it caches a 64-token prompt.
    let prompt: Vec<u32> = (1000..1064).collect();
    index.apply(&KvEvent {
        worker: WorkerId::new(3),
        event_id: 0,
        tier: StorageTier::Device,
        data: KvEventData::Stored {
            parent: None,
            block_size,
            blocks: BlockHasher::new(block_size).hash_blocks(&prompt),
        },
    })?;

    let request = GenerateRequest::new("r1", "model", prompt).with_max_tokens(4);
    let mut stream = router.clone().generate(request).await?;
    let chosen = router
        .selector()
        .load()
        .loads()
        .into_iter()
        .find(|(_, load)| load.active_requests > 0)
        .map(|(worker, _)| worker);
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        chunk?;
    }
    println!("routed to worker {chosen:?}");
    if chosen != Some(WorkerId::new(3)) {
        return Err("the request did not go to the worker that caches its prompt".into());
    }
    Ok(())
}
