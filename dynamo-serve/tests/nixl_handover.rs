//! Split prefill and decode workers handing KV over through NIXL (the `nixl` feature): a
//! `dynamo-serve worker --role prefill` and a `--role decode` (candle, SmolLM2-135M) behind a
//! frontend answer greedy prompts as one aggregated process does, and every hand-over's blocks
//! land over NIXL, not TCP (the decode worker's debug log says which way each landed).
//!
//! Skips where NIXL is not loaded, unless `DYNAMO_REQUIRE_NIXL=1` (CI's NIXL step, with the
//! libraries of the `nixl-cu12` wheel on `LD_LIBRARY_PATH`; the workers inherit it).
#![cfg(feature = "nixl")]

#[expect(dead_code, reason = "this test uses a part of the shared helpers")]
mod support;

use dynamo_transport::local::free_port;
use support::{
    GREEDY_PROMPTS, Process, aggregated_reference, greedy_texts, joined_frontend, placed,
};

/// NIXL loads in this process (and so in the workers it starts); else skip, or fail under
/// `DYNAMO_REQUIRE_NIXL=1`.
fn nixl_or_skip(test: &str) -> bool {
    if dynamo_kvbm::is_nixl_loaded() {
        return true;
    }
    assert!(
        std::env::var("DYNAMO_REQUIRE_NIXL").as_deref() != Ok("1"),
        "DYNAMO_REQUIRE_NIXL=1 but NIXL is not loaded: is libnixl_capi.so on LD_LIBRARY_PATH?"
    );
    eprintln!("{test}: NIXL is not loaded in this process; skipped");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_workers_hand_kv_over_through_nixl_and_answer_as_one_aggregated_process() {
    if !nixl_or_skip("split_workers_hand_kv_over_through_nixl") {
        return;
    }
    let (_reference, reference) = aggregated_reference();

    let temporary = tempfile::Builder::new()
        .prefix("dynamo-nixl-")
        .tempdir()
        .expect("a temporary directory");
    let directory = temporary.path();
    let registry = directory.join("registry").display().to_string();
    let kv_port = free_port().expect("a free port").to_string();
    let role = |id: &str, role: &str, kv_port: &str| {
        let args = [
            "worker",
            "--role",
            role,
            "--id",
            id,
            "--registry",
            &registry,
            "--kv-port",
            kv_port,
        ];
        Process::start_with_env(&args, &[("RUST_LOG", "info,dynamo_serve=debug")])
    };
    let prefill = role("1", "prefill", &kv_port);
    let decode = role("2", "decode", "0");
    let (_frontend, frontend) = joined_frontend(&registry, &[]).await;
    reference.wait_ready().await;
    assert!(prefill.logged(&format!(
        "KV blocks on 127.0.0.1:{kv_port} (data plane: NIXL"
    )));
    assert!(decode.logged("pulling handed-over KV blocks (data plane: NIXL"));

    let split = greedy_texts(&frontend).await;
    assert_eq!(split, greedy_texts(&reference).await);
    let metrics = frontend.metrics().await;
    let remote = placed(&metrics, "remote");
    assert_eq!(remote, GREEDY_PROMPTS.len() as u64, "{metrics}");
    assert_eq!(placed(&metrics, "fallback"), 0, "{metrics}");
    // The prompts of a block or more (all but the first) were handed over, each over NIXL.
    let over_nixl = decode.count(&["blocks landed over NIXL"]);
    assert!(
        over_nixl >= GREEDY_PROMPTS.len() - 1,
        "{over_nixl} hand-overs landed over NIXL"
    );
    assert_eq!(decode.count(&["blocks landed over TCP"]), 0);
    assert!(!decode.logged("could not be pulled"));
}
