//! The scaler's bookkeeping over `sh` processes that stand in for workers.

use std::time::{Duration, Instant};

use dynamo_core::WorkerId;

use super::*;

/// Lists every worker id: each worker counts as joined once started.
struct Everyone;

impl Membership for Everyone {
    fn members(&self, _: WorkerRole) -> BoxFuture<'_, Result<Vec<WorkerId>, Error>> {
        Box::pin(async { Ok((1..100).map(WorkerId::new).collect()) })
    }
}

/// A worker (its `-- ID` arguments are the script's `$0` and `$1`) that exits 0 a moment after
/// SIGTERM.
fn sleeper() -> WorkerTemplate {
    let script = "trap 'sleep 0.2; exit 0' TERM; while :; do sleep 0.05; done";
    WorkerTemplate::new("sh").args(["-c", script]).id_flag("--")
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "never {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn workers_start_and_the_newest_drain_on_the_way_down() {
    let pool = WorkerRole::Aggregated;
    let scaler = LocalProcesses::new(Everyone).with_pool(pool, sleeper());
    assert_eq!(scaler.size(pool).await.ok(), Some(PoolSize::default()));
    scaler.scale(pool, 3).await.expect("started");
    let size = scaler.size(pool).await.expect("a size");
    assert_eq!((size.desired, size.ready), (3, 3));

    scaler.scale(pool, 1).await.expect("stopped");
    // Stopped workers stop counting at once, while they drain.
    let size = scaler.size(pool).await.expect("a size");
    assert_eq!((size.desired, size.ready), (1, 1));
    assert_eq!(scaler.draining(pool), 2);
    eventually("drained", || scaler.draining(pool) == 0).await;
    let kept: Vec<u64> = scaler.lock().pools[0]
        .serving
        .iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(kept, [1], "the oldest is kept");

    // Ids are not reused.
    scaler.scale(pool, 2).await.expect("started");
    let ids: Vec<u64> = scaler.lock().pools[0]
        .serving
        .iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(ids, [1, 4]);
    scaler.shutdown(Duration::from_secs(5)).await;
    let size = scaler.size(pool).await.expect("a size");
    assert_eq!((size.desired, size.ready, scaler.draining(pool)), (0, 0, 0));
}

#[tokio::test]
async fn a_worker_that_dies_stops_counting_and_is_replaced_on_the_next_scale() {
    let pool = WorkerRole::Decode;
    let scaler = LocalProcesses::new(Everyone).with_pool(pool, sleeper());
    scaler.scale(pool, 2).await.expect("started");
    let pid = scaler.lock().pools[0].serving[0]
        .child
        .id()
        .expect("running");
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("killed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while scaler.size(pool).await.expect("a size").ready != 1 {
        assert!(Instant::now() < deadline, "the dead worker still counts");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    scaler.scale(pool, 2).await.expect("replaced");
    let size = scaler.size(pool).await.expect("a size");
    assert_eq!((size.desired, size.ready), (2, 2));
}

#[tokio::test]
async fn a_pool_without_a_template_is_an_error() {
    let scaler = LocalProcesses::new(Everyone);
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
}
