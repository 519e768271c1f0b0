//! A disaggregated frontend refuses, when they register, the workers whose KV blocks its pools
//! could not use, and says why in its log; an aggregated worker still joins its decode pool.
//! (The pairing of layouts part by part is tested in `dynamo-transport/tests/discovery.rs`;
//! candle prefill and decode workers that pair are joined in `deployment.rs`.)

#[expect(dead_code, reason = "this test uses a part of the shared helpers")]
mod support;

use std::time::Duration;

use support::{directory_frontend_with, registry_worker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_whose_kv_blocks_could_not_be_handed_over_are_refused_at_join_time() {
    let temporary = tempfile::Builder::new()
        .prefix("dynamo-disagg-join-")
        .tempdir()
        .expect("a temporary directory");
    let directory = temporary.path();
    let registry = directory.display().to_string();
    // The frontend's candle layout: blocks of 16 tokens of SmolLM2-135M.
    let _workers = [
        // A decode worker that does not say how its blocks are laid out (mocker workers
        // hand nothing over).
        registry_worker("mocker", 1, &registry, &["--role", "decode"]),
        // A prefill worker whose blocks hold another number of tokens.
        registry_worker(
            "mocker",
            2,
            &registry,
            &["--role", "prefill", "--block-size", "32"],
        ),
        // An aggregated worker: it hands nothing over and computes every prompt itself.
        registry_worker("mocker", 3, &registry, &[]),
    ];
    let (frontend_process, _frontend) = directory_frontend_with(&registry, &[]).await;
    let within = Duration::from_secs(120);
    frontend_process
        .wait_for(
            "worker 1/0 refused: it is a decode worker that does not say how its KV blocks \
             are laid out",
            within,
        )
        .await;
    frontend_process
        .wait_for(
            "worker 2/0 refused: its KV blocks hold 32 tokens and the router's 16",
            within,
        )
        .await;
    frontend_process.wait_for("worker 3/0 at", within).await;
    assert!(
        !frontend_process.logged("worker 1/0 at") && !frontend_process.logged("worker 2/0 at"),
        "a refused worker joined"
    );
}
