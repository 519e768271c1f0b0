//! Two frontends behind one load balancer, with one NATS server: in approximate mode, a prompt
//! routed by one frontend is routed to the same worker by the other (which finds it cached),
//! because the frontends' routers share their predictions and bookings.

#[expect(dead_code, reason = "this test uses a part of the shared helpers")]
mod support;

use std::time::Duration;

use dynamo_transport::local::LocalNats;
use support::{
    Frontend, Process, cached_tokens, directory_frontend_with, eventually, long_prompt,
    registry_worker,
};

/// The messages of kind `update` that `frontend` has applied from other frontends.
async fn applied(frontend: &Frontend, update: &str) -> u64 {
    let label = format!("update=\"{update}\"");
    frontend
        .metrics()
        .await
        .lines()
        .find(|line| {
            line.starts_with("dynamo_router_replica_applied_total{") && line.contains(&label)
        })
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_routed_by_one_frontend_is_found_cached_through_the_other() {
    let nats = LocalNats::start().expect("nats-server starts");
    let temporary = tempfile::Builder::new()
        .prefix("dynamo-replicas-")
        .tempdir()
        .expect("a temporary directory");
    let directory = temporary.path();
    let registry = directory.display().to_string();
    let _workers: Vec<Process> = (1..=2)
        .map(|id| registry_worker("mocker", id, &registry, &[]))
        .collect();
    let url = nats.url();
    let (a_process, a) = directory_frontend_with(&registry, &["--nats", &url]).await;
    let (b_process, b) = directory_frontend_with(&registry, &["--nats", &url]).await;
    for process in [&a_process, &b_process] {
        for joined in ["worker 1/0 at", "worker 2/0 at"] {
            process.wait_for(joined, Duration::from_secs(60)).await;
        }
    }
    for round in 0..4 {
        let prompt = long_prompt(&format!("replica{round}x"));
        let (status, first) = a.complete(&prompt, 2).await;
        assert_eq!(status, 200, "{first}");
        assert_eq!(cached_tokens(&first), 0, "{first}");
        // B has applied A's prediction for this prompt, and the end of A's request.
        let heard =
            async || applied(&b, "routed").await > round && applied(&b, "released").await > round;
        eventually("B hears of A's decision", Duration::from_secs(10), heard).await;
        let (status, second) = b.complete(&prompt, 2).await;
        assert_eq!(status, 200, "{second}");
        assert!(cached_tokens(&second) > 0, "round {round}: {second}");
    }
}
