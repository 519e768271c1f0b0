//! The scaler's bookkeeping over `sh` processes that stand in for workers and join a directory
//! registry as `dynamo-serve worker` does.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;

/// A fresh registry directory for the test `name`.
fn registry(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("planner-local-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a registry directory");
    dir
}

/// A `role` worker (its `-- ID` arguments are the script's `$0` and `$1`) that, once it handles
/// SIGTERM, registers in `registry`; on SIGTERM it leaves the registry and exits 0 a
/// second later. While a file `broken` is in the registry it exits 1 at once.
fn sleeper(registry: &std::path::Path, role: WorkerRole) -> WorkerTemplate {
    let script = r#"if [ -e "$REGISTRY/broken" ]; then exit 1; fi
record="$REGISTRY/worker-$1-0.json"
trap 'rm -f "$record"; sleep 1; exit 0' TERM
printf '{"id": {"worker": %s, "dp_rank": 0}, "role": %s}' "$1" "$ROLE" > "$REGISTRY/.$1.tmp"
mv "$REGISTRY/.$1.tmp" "$record"
while :; do sleep 0.05; done"#;
    WorkerTemplate::new("sh")
        .args(["-c", script])
        .env("REGISTRY", registry.as_os_str())
        .env(
            "ROLE",
            serde_json::to_string(&role).expect("a role in JSON"),
        )
        .id_flag("--")
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "never {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until `pool` has `ready` workers ready.
async fn until_ready(scaler: &LocalProcesses, pool: WorkerRole, ready: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while scaler.size(pool).await.expect("a size").ready != ready {
        assert!(Instant::now() < deadline, "never {ready} ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The ids of the first pool's serving workers, oldest first.
fn serving(scaler: &LocalProcesses) -> Vec<u64> {
    scaler.lock().pools[0]
        .serving
        .iter()
        .map(|w| w.id)
        .collect()
}

#[tokio::test]
async fn workers_start_and_the_newest_drain_on_the_way_down() {
    let pool = WorkerRole::Aggregated;
    let dir = registry("drain");
    let scaler =
        LocalProcesses::new(RegistryDirectory::new(&dir)).with_pool(pool, sleeper(&dir, pool));
    assert_eq!(scaler.size(pool).await.ok(), Some(PoolSize::default()));
    scaler.scale(pool, 3).await.expect("started");
    assert_eq!(scaler.size(pool).await.expect("a size").desired, 3);
    // Workers count once they have joined, which each does after it can take SIGTERM.
    until_ready(&scaler, pool, 3).await;

    scaler.scale(pool, 1).await.expect("stopped");
    // Stopped workers stop counting at once, while they drain.
    let size = scaler.size(pool).await.expect("a size");
    assert_eq!((size.desired, size.ready), (1, 1));
    assert_eq!(scaler.draining(pool), 2);
    eventually("drained", || scaler.draining(pool) == 0).await;
    assert_eq!(serving(&scaler), [1], "the oldest is kept");

    // Ids are not reused.
    scaler.scale(pool, 2).await.expect("started");
    assert_eq!(serving(&scaler), [1, 4]);
    until_ready(&scaler, pool, 2).await;
    scaler.shutdown(Duration::from_secs(5)).await;
    let size = scaler.size(pool).await.expect("a size");
    assert_eq!((size.desired, size.ready, scaler.draining(pool)), (0, 0, 0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_worker_that_dies_stops_counting_and_is_replaced_without_a_scale_call() {
    let pool = WorkerRole::Decode;
    let dir = registry("dies");
    let scaler =
        LocalProcesses::new(RegistryDirectory::new(&dir)).with_pool(pool, sleeper(&dir, pool));
    scaler.scale(pool, 2).await.expect("started");
    until_ready(&scaler, pool, 2).await;
    let pid = scaler.lock().pools[0].serving[0]
        .child
        .id()
        .expect("running");
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("killed");
    // The dead worker stops counting although its record stays in the registry, and the
    // size call that finds it gone starts a replacement, which counts once it has joined.
    until_ready(&scaler, pool, 1).await;
    until_ready(&scaler, pool, 2).await;
    assert_eq!(serving(&scaler), [2, 3]);
    assert_eq!(scaler.size(pool).await.expect("a size").desired, 2);
    scaler.shutdown(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Wait until every serving worker of the first pool has exited (without reaping them).
async fn all_exited(scaler: &LocalProcesses) {
    eventually("exited", || {
        let mut state = scaler.lock();
        let serving = &mut state.pools[0].serving;
        serving
            .iter_mut()
            .all(|worker| matches!(worker.child.try_wait(), Ok(Some(_))))
    })
    .await;
}

/// How long the first pool still waits before it starts a worker.
fn waiting(scaler: &LocalProcesses) -> Duration {
    let state = scaler.lock();
    let now = tokio::time::Instant::now();
    state.pools[0].failures.waiting(now).unwrap_or_default()
}

#[tokio::test]
async fn a_worker_that_fails_to_start_is_tried_again_only_after_a_growing_wait() {
    let pool = WorkerRole::Prefill;
    let dir = registry("backoff");
    let broken = dir.join("broken");
    std::fs::write(&broken, "").expect("a flag");
    let scaler =
        LocalProcesses::new(RegistryDirectory::new(&dir)).with_pool(pool, sleeper(&dir, pool));
    scaler.scale(pool, 1).await.expect("started");
    assert_eq!(serving(&scaler), [1]);
    all_exited(&scaler).await;
    // The size call that finds it gone before it joined counts a failed start: 10 s to wait.
    let size = scaler.size(pool).await.expect("a size");
    assert_eq!((size.desired, size.ready), (1, 0));
    assert!(serving(&scaler).is_empty());
    assert!(
        waiting(&scaler) > Duration::from_secs(5),
        "{:?}",
        waiting(&scaler)
    );
    // While the pool waits, neither a size call nor a scale call starts a worker.
    scaler.scale(pool, 2).await.expect("a new target");
    let size = scaler.size(pool).await.expect("a size");
    assert_eq!((size.desired, size.ready), (2, 0));
    assert!(serving(&scaler).is_empty());

    // Once the wait is over the next call tries again; two that fail together are one more
    // failed try, and the wait doubles.
    scaler.lock().pools[0].failures.expire();
    scaler.size(pool).await.expect("a size");
    assert_eq!(serving(&scaler), [2, 3]);
    all_exited(&scaler).await;
    scaler.size(pool).await.expect("a size");
    assert!(serving(&scaler).is_empty());
    assert!(
        waiting(&scaler) > Duration::from_secs(15),
        "{:?}",
        waiting(&scaler)
    );

    // Workers that join end the back-off: the next failure waits 10 s again.
    std::fs::remove_file(&broken).expect("mended");
    scaler.lock().pools[0].failures.expire();
    until_ready(&scaler, pool, 2).await;
    assert_eq!(serving(&scaler), [4, 5]);
    let first = scaler.lock().pools[0]
        .failures
        .failed(&RestartBackoff::default(), tokio::time::Instant::now());
    assert_eq!(first, Some(Duration::from_secs(10)));
    scaler.shutdown(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_pool_without_a_template_is_an_error() {
    let scaler = LocalProcesses::new(RegistryDirectory::new("/nonexistent/registry"));
    let refused = scaler.scale(WorkerRole::Prefill, 1).await;
    assert!(matches!(
        refused,
        Err(Error::Scale {
            pool: WorkerRole::Prefill,
            ..
        })
    ));
    let missing = WorkerTemplate::new("/nonexistent/worker");
    let scaler = scaler.with_pool(WorkerRole::Prefill, missing);
    let failed = scaler.scale(WorkerRole::Prefill, 1).await;
    assert!(
        matches!(
            failed,
            Err(Error::Scale {
                source: Some(_),
                ..
            })
        ),
        "{failed:?}"
    );
    // A worker that cannot be spawned is a failed start too: the pool waits before the next.
    assert!(waiting(&scaler) > Duration::from_secs(5));
    let size = scaler.size(WorkerRole::Prefill).await.expect("a size");
    assert_eq!((size.desired, size.ready), (1, 0));
}
