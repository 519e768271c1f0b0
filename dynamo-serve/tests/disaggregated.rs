//! Disaggregated serving in one process, as a user starts it: the README's `dynamo-serve
//! --prefill-workers 1 --decode-workers 2` (every prompt remote), and `--prefill-workers 1
//! --decode-workers 1` with `--placement flexible` and `--placement stall-free` (candle workers,
//! SmolLM2-135M), driven over HTTP beside an aggregated `dynamo-serve --workers 1`. The split
//! processes are tested in `deployment.rs`.

#[expect(dead_code, reason = "this test uses a part of the shared helpers")]
mod support;

use std::time::Duration;

use hyper::body::Incoming;
use serde_json::json;

use dynamo_transport::local::free_port;
use support::{
    Frontend, GREEDY_PROMPTS, Process, first_events, greedy_text, greedy_texts, placed,
    read_stream, streamed_completion,
};

/// `dynamo-serve` in one process with `flags`, once it answers.
async fn serve(flags: &[&str]) -> (Process, Frontend) {
    let port = free_port().expect("a free port").to_string();
    let mut args = vec!["--port", &port];
    args.extend_from_slice(flags);
    let process = Process::start(&args);
    let frontend = Frontend::new(port.parse().expect("a port"));
    frontend.wait_ready().await;
    (process, frontend)
}

/// `dynamo-serve` with one prefill and one decode worker, prompts placed by `placement`.
async fn pools(placement: &str) -> (Process, Frontend) {
    let flags = ["--prefill-workers", "1", "--decode-workers", "1"];
    serve(&[&flags[..], &["--placement", placement]].concat()).await
}

/// Start a streamed greedy answer of 64 tokens, long enough to be decoding while the next
/// requests come: its stream and first events.
async fn start_long_answer(frontend: &Frontend) -> (Incoming, String) {
    let long = json!({
        "model": "smollm2", "prompt": "Count from one to a hundred:", "max_tokens": 64,
        "ignore_eos": true, "temperature": 0,
        "stream": true, "stream_options": { "include_usage": true },
    });
    first_events(frontend, &long).await
}

/// Read the rest of a long answer: complete, 64 tokens, no error.
async fn finish_long_answer(stream: Incoming, first: String) {
    let events = first + &read_stream(stream, Duration::from_secs(600)).await;
    let (_, usage, errors, done) = streamed_completion(&events);
    assert!(done && errors == 0, "{events}");
    assert_eq!(usage["completion_tokens"], 64, "{events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_s_pools_hand_every_prompt_over_and_answer_as_one_aggregated_worker() {
    let (_aggregated, reference) = serve(&["--workers", "1"]).await;
    let flags = ["--prefill-workers", "1", "--decode-workers", "2"];
    let (split_process, split) = serve(&flags).await;
    let texts = greedy_texts(&split).await;
    assert_eq!(texts, greedy_texts(&reference).await);
    let metrics = split.metrics().await;
    let prompts = GREEDY_PROMPTS.len() as u64;
    assert_eq!(placed(&metrics, "remote"), prompts, "{metrics}");
    for never in ["local", "prefill_worker", "no_prefill_worker", "fallback"] {
        assert_eq!(placed(&metrics, never), 0, "{never}: {metrics}");
    }
    // Every decode worker read its hand-over's blocks from the prefill worker's exports.
    assert!(
        !split_process.logged("could not be pulled"),
        "a hand-over was computed instead of pulled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flexible_prefill_pool_serves_whole_requests_on_its_idle_worker_only() {
    let (_aggregated, reference) = serve(&["--workers", "1"]).await;
    let (_flexible, flexible) = pools("flexible").await;
    let whole = GREEDY_PROMPTS.len() as u64;

    // One request at a time: each finds the prefill worker idle (the one before released its
    // booking there) and is served whole by it, with the aggregated answer.
    let texts = greedy_texts(&flexible).await;
    assert_eq!(texts, greedy_texts(&reference).await);
    let metrics = flexible.metrics().await;
    assert_eq!(placed(&metrics, "prefill_worker"), whole, "{metrics}");

    // While the prefill worker decodes a long answer it is not idle: the next request is not
    // given to it; on these idle workers a hand-over does not pay, so the decode worker
    // computes the prompt.
    let (stream, first) = start_long_answer(&flexible).await;
    assert_eq!(greedy_text(&flexible, GREEDY_PROMPTS[0]).await, texts[0]);
    let metrics = flexible.metrics().await;
    assert_eq!(placed(&metrics, "prefill_worker"), whole + 1, "{metrics}");
    assert_eq!(placed(&metrics, "local"), 1, "{metrics}");
    finish_long_answer(stream, first).await;

    // The long answer ended: nothing stays booked on the prefill worker, which serves the next
    // request whole again.
    assert_eq!(greedy_text(&flexible, GREEDY_PROMPTS[1]).await, texts[1]);
    let metrics = flexible.metrics().await;
    assert_eq!(placed(&metrics, "prefill_worker"), whole + 2, "{metrics}");
    for never in ["remote", "no_prefill_worker", "fallback"] {
        assert_eq!(placed(&metrics, never), 0, "{never}: {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_free_pool_hands_prompts_over_only_while_the_decode_worker_decodes() {
    let (_aggregated, reference) = serve(&["--workers", "1"]).await;
    let (_stall_free, stall_free) = pools("stall-free").await;
    let whole = GREEDY_PROMPTS.len() as u64;

    // One request at a time: the decode worker decodes nothing when each arrives, and
    // computing the prompt there costs no hand-over, so it serves them all, with the
    // aggregated answers.
    let texts = greedy_texts(&stall_free).await;
    assert_eq!(texts, greedy_texts(&reference).await);
    let metrics = stall_free.metrics().await;
    assert_eq!(placed(&metrics, "local"), whole, "{metrics}");

    // While it decodes a long answer, the next prompt would stall it: the prefill worker
    // computes it and hands its KV over, and the answer is the same.
    let (stream, first) = start_long_answer(&stall_free).await;
    assert_eq!(greedy_text(&stall_free, GREEDY_PROMPTS[0]).await, texts[0]);
    let metrics = stall_free.metrics().await;
    assert_eq!(placed(&metrics, "local"), whole + 1, "{metrics}");
    assert_eq!(placed(&metrics, "remote"), 1, "{metrics}");
    finish_long_answer(stream, first).await;

    // Idle again: the decode worker computes the next prompt itself.
    assert_eq!(greedy_text(&stall_free, GREEDY_PROMPTS[1]).await, texts[1]);
    let metrics = stall_free.metrics().await;
    assert_eq!(placed(&metrics, "local"), whole + 2, "{metrics}");
    for never in ["prefill_worker", "no_prefill_worker", "fallback"] {
        assert_eq!(placed(&metrics, never), 0, "{never}: {metrics}");
    }
}
