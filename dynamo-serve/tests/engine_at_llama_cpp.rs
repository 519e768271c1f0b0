//! `dynamo-serve frontend --engine-at openai=…` in front of llama.cpp's real server (the PyPI
//! package `xllamacpp`, with its metrics endpoint on): the frontend reads its load under
//! llama.cpp's names (`llamacpp:requests_processing`, `llamacpp:requests_deferred`), which is
//! what lets the router excuse a canary queued behind another client's answer there.
//!
//! Runs when `DYNAMO_LLAMA_PYTHON` names a Python with `xllamacpp` installed (CI's virtual
//! environment); without it the test says so and passes without running.

#[expect(dead_code, reason = "this test uses part of the shared support")]
mod support;

#[path = "../../engines/upstream/tests/support/llama_server.rs"]
mod llama_server;

use std::time::Duration;

use support::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_llama_cpp_servers_load_is_read_from_its_metrics() {
    let Some(python) = llama_server::python_from_env() else {
        eprintln!(
            "skipped: set {} to a Python with `{}` installed to run this test",
            llama_server::PYTHON_VARIABLE,
            llama_server::XLLAMACPP
        );
        return;
    };
    let server = tokio::task::spawn_blocking(move || llama_server::start(&python))
        .await
        .expect("started");
    let engines = [format!("openai={},id=1", server.url)];
    let (_process, frontend) = support::engine_frontend_routed(&engines, "approx-kv").await;

    // Idle, the server processes and defers nothing; its scrape is fresh.
    eventually(
        "the llama.cpp server's load read",
        Duration::from_secs(30),
        async || {
            let text = frontend.metrics().await;
            support::series_value(&text, "dynamo_engine_metrics_up", "1/0") == Some(1.0)
                && support::series_value(&text, "dynamo_engine_running_requests", "1/0")
                    == Some(0.0)
                && support::series_value(&text, "dynamo_engine_waiting_requests", "1/0")
                    == Some(0.0)
        },
    )
    .await;
}
