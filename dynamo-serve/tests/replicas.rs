//! Two frontends behind one load balancer, with one NATS server: in approximate mode, a prompt
//! routed by one frontend is routed to the same worker by the other (which finds it cached),
//! because the frontends' routers share their predictions and bookings — over workers that
//! discovery reports, and over engine servers named with `--engine-at`.

#[expect(dead_code, reason = "this test uses a part of the shared helpers")]
mod support;

#[path = "../../engines/upstream/tests/support/replay.rs"]
mod replay;

use std::collections::HashMap;
use std::time::Duration;

use dynamo_transport::local::LocalNats;
use replay::Replay;
use support::{
    Frontend, Process, cached_tokens, directory_frontend_with, engine_frontend_with, eventually,
    long_prompt, registry_worker,
};

/// The messages of kind `update` that `frontend`'s aggregated/decode router has applied from
/// other frontends.
async fn applied(frontend: &Frontend, update: &str) -> u64 {
    let label = format!("update=\"{update}\"");
    frontend
        .metrics()
        .await
        .lines()
        .find(|line| {
            line.starts_with("dynamo_router_replica_applied_total{")
                && line.contains(&label)
                && line.contains("pool=\"aggregated/decode\"")
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

/// The completions each server has answered.
fn completions(servers: &[Replay]) -> Vec<usize> {
    servers
        .iter()
        .map(|server| server.requests_to("POST /v1/completions"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontends_in_front_of_the_same_engine_servers_send_a_prompt_where_the_other_did() {
    let nats = LocalNats::start().expect("nats-server starts");
    // Two vLLM servers answering alike and reporting no load: without shared predictions,
    // each frontend would choose between them by a random tie-break.
    let fixture = "../engines/upstream/tests/fixtures/vllm_whole_token_ids.http";
    let answer = std::fs::read(replay::package_dir().join(fixture)).expect("the fixture");
    let idle = "HTTP/1.1 200 OK\ncontent-type: text/plain; version=0.0.4\n\n\
                vllm:num_requests_running{engine=\"0\"} 0\n\
                vllm:num_requests_waiting{engine=\"0\"} 0\n";
    let routes = HashMap::from([
        ("/v1/completions".to_owned(), answer),
        ("/metrics".to_owned(), idle.as_bytes().to_vec()),
    ]);
    let servers = [
        Replay::start(routes.clone()).await,
        Replay::start(routes).await,
    ];
    let engines: Vec<String> = servers
        .iter()
        .zip(1..)
        .map(|(server, id)| format!("vllm={},id={id}", server.url()))
        .collect();
    let url = nats.url();
    let flags = ["--nats", url.as_str()];
    let (a_process, a) = engine_frontend_with(&engines, "approx-kv", &flags).await;
    let (b_process, b) = engine_frontend_with(&engines, "approx-kv", &flags).await;
    for process in [&a_process, &b_process] {
        process
            .wait_for("aggregated/decode router replica", Duration::from_secs(30))
            .await;
    }
    for round in 0..6 {
        let prompt = long_prompt(&format!("server{round}x"));
        let before = completions(&servers);
        let (status, body) = a.complete(&prompt, 2).await;
        assert_eq!(status, 200, "{body}");
        let after_a = completions(&servers);
        let chosen = (0..2)
            .find(|&s| after_a[s] > before[s])
            .expect("a server answered A");
        let heard =
            async || applied(&b, "routed").await > round && applied(&b, "released").await > round;
        eventually("B hears of A's decision", Duration::from_secs(10), heard).await;
        let (status, body) = b.complete(&prompt, 2).await;
        assert_eq!(status, 200, "{body}");
        let after_b = completions(&servers);
        assert_eq!(
            after_b[chosen],
            after_a[chosen] + 1,
            "round {round}: B sent the prompt elsewhere than A ({after_a:?} then {after_b:?})"
        );
    }
}
