//! Two frontends given one response store (`--response-store`): a conversation begun through
//! one goes on through the other, as behind a load balancer that spreads a client's turns, and a
//! background response begun through a frontend that is then stopped is finished by it, and
//! read through the other. The store is a folder both mount and, with the `s3` feature, a bucket
//! of a real S3-compatible server (`dynamo_transport::local::LocalS3`, which CI installs).

#[expect(dead_code, reason = "this test uses a part of the shared helpers")]
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Frontend, Process, frontend_with_env, registry_worker};

/// A mocker worker with `worker_flags` and two frontends that keep their responses at `url`,
/// with `env`, once both see the worker; the registry's folder goes with them.
struct Deployment {
    _registry: tempfile::TempDir,
    _worker: Process,
    frontends: [(Process, Frontend); 2],
}

impl Deployment {
    async fn start(url: &str, env: &[(&str, &str)], worker_flags: &[&str]) -> Self {
        let registry = tempfile::Builder::new()
            .prefix("dynamo-shared-responses-")
            .tempdir()
            .expect("a temporary directory");
        let path = registry.path().display().to_string();
        let worker = registry_worker("mocker", 1, &path, worker_flags);
        let flags = ["--registry", path.as_str(), "--response-store", url];
        let a = frontend_with_env(&flags, env).await;
        let b = frontend_with_env(&flags, env).await;
        joined(&[&a.0, &b.0]).await;
        Deployment {
            _registry: registry,
            _worker: worker,
            frontends: [a, b],
        }
    }
}

/// A worker and two frontends that keep their responses at `url`, with `env`; the second turn
/// of a conversation whose first went through the other frontend.
async fn two_turns_through_two_frontends(url: &str, env: &[(&str, &str)]) -> (Value, Value) {
    let deployment = Deployment::start(url, env, &[]).await;
    let [(_, a), (_, b)] = &deployment.frontends;
    let first = answer(
        a,
        json!({"model": "smollm2", "input": "Name a colour.",
        "max_output_tokens": 4}),
    )
    .await;
    let second = answer(
        b,
        json!({"model": "smollm2", "input": "And another?",
        "max_output_tokens": 4, "previous_response_id": first["id"]}),
    )
    .await;
    (first, second)
}

async fn joined(processes: &[&Process]) {
    for process in processes {
        process
            .wait_for("worker 1/0 at", Duration::from_secs(60))
            .await;
    }
}

/// The 200 answer of `/v1/responses` to `body`.
async fn answer(frontend: &Frontend, body: Value) -> Value {
    let (status, answer) = frontend.post_json("/v1/responses", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["store"], true, "{answer}");
    answer
}

/// `second` continued `first`: its prompt held the first turn's question and answer.
fn continues(second: &Value, first: &Value) {
    assert_eq!(second["previous_response_id"], first["id"]);
    let tokens = |value: &Value, field: &str| value["usage"][field].as_u64().expect("a count");
    let before = tokens(first, "input_tokens") + tokens(first, "output_tokens");
    let seen = tokens(second, "input_tokens");
    assert!(
        seen > before,
        "{seen} tokens after a turn of {before}: {second}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_begun_through_one_frontend_goes_on_through_the_other() {
    let store = tempfile::tempdir().expect("a temporary directory");
    let url = format!("file://{}", store.path().display());
    let (first, second) = two_turns_through_two_frontends(&url, &[]).await;
    continues(&second, &first);
    // The folder holds the two responses, one file each.
    let stored = std::fs::read_dir(store.path().join("open")).expect("the caller's folder");
    assert_eq!(stored.count(), 2);
}

#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_an_s3_bucket_too() {
    let server = dynamo_transport::local::LocalS3::start("responses").expect(
        "an S3 server: install one with `pip install 'moto[server]'` (CI puts it in \
         ~/.cache/dynamo-ci/venv), or point DYNAMO_S3_SERVER at a moto_server",
    );
    let endpoint = server.endpoint();
    let env = [
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    let (first, second) =
        two_turns_through_two_frontends("s3://responses/conversations", &env).await;
    continues(&second, &first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frontend_stopped_mid_background_response_finishes_and_stores_it() {
    let store = tempfile::tempdir().expect("a temporary directory");
    let url = format!("file://{}", store.path().display());
    // A slow worker: the answer (about 20 tokens) takes seconds.
    let deployment = Deployment::start(&url, &[], &["--speedup", "0.05"]).await;
    let [(a_process, a), (_, b)] = &deployment.frontends;
    let (status, started) = a
        .post_json(
            "/v1/responses",
            &json!({"model": "smollm2", "input": "Tell a story.", "background": true,
                "max_output_tokens": 100}),
        )
        .await;
    assert_eq!(status, 200, "{started}");
    let path = format!("/v1/responses/{}", started["id"].as_str().expect("an id"));
    let (_, running) = b.get_json(&path).await;
    assert_eq!(running["status"], "in_progress", "{running}");

    // SIGTERM: the frontend takes no new connection, finishes the response, stores it, exits 0.
    a_process.terminate();
    a_process
        .wait_for("stopping: no new connections", Duration::from_secs(10))
        .await;
    let [(mut a_process, _), (_, b)] = deployment.frontends;
    let status = a_process.wait_exit(Duration::from_secs(60)).await;
    assert!(
        status.success() && a_process.logged("drained"),
        "{status:?}"
    );
    let (status, done) = b.get_json(&path).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["status"], "completed", "{done}");
    assert!(done["output"][0]["content"][0]["text"] != "", "{done}");
}
