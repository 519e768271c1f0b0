//! Worker health over a router of test workers: a worker that hangs without closing its stream
//! is detected within the stall timeout, its request continues on a healthy worker token for
//! token, it is ejected from routing, and a canary brings it back once it answers again. Time
//! is tokio's paused clock: nothing here waits for real.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure by design"
)]

mod common;

use common::{Attempt, answer};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dynamo_core::{
    BlockSize, BoxEngine, Delivery, EchoEngine, EngineExt, Error, ErrorClass, FinishReason,
    GenerateRequest, TokenChunk, TokenStream, WorkerId,
};
use dynamo_router::health::{HealthConfig, ReportedLoad, Stalled};
use dynamo_router::migrate::{Migrate, MigrationConfig};
use dynamo_router::{BusyThresholds, QueueOrder, RoundRobin, RouterService};
use futures::StreamExt;
use tokio::time::Instant;

const STALL: Duration = Duration::from_secs(2);
const PROBE: Duration = Duration::from_secs(5);

/// How a worker misbehaves while its `faulty` flag is set.
#[derive(Clone, Copy)]
enum Fault {
    /// Stream `after` tokens, then neither yield nor close.
    Hang { after: usize },
    /// Refuse each call with `unavailable`.
    Refuse,
}

#[derive(Clone)]
struct Workers {
    router: RouterService,
    fault: Fault,
    /// Workers 1 to `failing` misbehave while this is set.
    faulty: Arc<AtomicBool>,
    failing: u64,
    attempts: Arc<Mutex<Vec<Attempt>>>,
}

impl Workers {
    /// A router watched as `health` says, with no workers yet; worker 1 fails as `fault` says.
    fn new(health: HealthConfig, fault: Fault) -> Self {
        Self::failing(health, fault, 1)
    }

    /// [`new`](Self::new), with workers 1 to `failing` failing.
    fn failing(health: HealthConfig, fault: Fault, failing: u64) -> Self {
        Workers {
            // Round robin, so that a worker back in routing is chosen again for sure (a
            // cache-aware policy may keep the repeated prompt where it is cached).
            router: RouterService::builder(BlockSize::new(4).unwrap())
                .policy(RoundRobin::new())
                .health(health)
                .build(),
            fault,
            faulty: Arc::new(AtomicBool::new(true)),
            failing,
            attempts: Arc::default(),
        }
    }

    fn insert(&self, id: u64) {
        self.router
            .insert_worker(WorkerId::new(id), self.engine(id));
    }

    fn engine(&self, id: u64) -> BoxEngine {
        let workers = self.clone();
        tower::service_fn(move |request: GenerateRequest| {
            let workers = workers.clone();
            async move { workers.generate(id, &request) }
        })
        .boxed_engine()
    }

    fn generate(&self, id: u64, request: &GenerateRequest) -> Result<TokenStream, Error> {
        let prompt = request.tokens.as_slice().to_vec();
        let max_tokens = request.limits.max_tokens.unwrap_or(16);
        let cancel = request.cancellation().child_token();
        self.attempts.lock().unwrap().push(Attempt {
            worker: id,
            prompt: prompt.clone(),
            max_tokens: request.limits.max_tokens,
            cancel: cancel.clone(),
        });
        let mut chunks: Vec<Result<TokenChunk, Error>> = answer(&prompt, max_tokens)
            .into_iter()
            .map(|t| Ok(TokenChunk::token(t)))
            .collect();
        chunks.push(Ok(TokenChunk::finish(FinishReason::Length, None)));
        if id > self.failing || !self.faulty.load(Ordering::SeqCst) {
            return Ok(TokenStream::new(futures::stream::iter(chunks), cancel));
        }
        match self.fault {
            Fault::Hang { after } => {
                chunks.truncate(after);
                let hung = futures::stream::iter(chunks).chain(futures::stream::pending());
                Ok(TokenStream::new(hung, cancel))
            }
            Fault::Refuse => Err(Error::unavailable("cannot connect")),
        }
    }

    fn migrate(&self) -> Migrate<RouterService> {
        Migrate::new(self.router.clone(), MigrationConfig::default())
    }

    /// The workers asked, in order, canaries left out.
    fn routed(&self) -> Vec<u64> {
        let attempts = self.attempts.lock().unwrap();
        attempts
            .iter()
            .filter(|a| a.max_tokens != Some(1))
            .map(|a| a.worker)
            .collect()
    }

    /// The canaries `worker` got.
    fn canaries(&self, worker: u64) -> usize {
        let attempts = self.attempts.lock().unwrap();
        attempts
            .iter()
            .filter(|a| a.worker == worker && a.max_tokens == Some(1) && a.prompt == [1])
            .count()
    }
}

fn config() -> HealthConfig {
    HealthConfig::default()
        .stall_timeout(Some(STALL))
        .probe(PROBE, Duration::from_secs(1))
        .probe_idle(false)
}

fn request(id: &str) -> GenerateRequest {
    GenerateRequest::new(id, "m", (1..=10).collect::<Vec<_>>()).with_max_tokens(12)
}

#[tokio::test(start_paused = true)]
async fn a_hung_worker_is_ejected_its_request_continues_and_a_canary_brings_it_back() {
    let workers = Workers::new(config(), Fault::Hang { after: 3 });
    workers.insert(1);
    let start = Instant::now();
    let mut stream = workers.migrate().generate(request("r1")).await.unwrap();
    let mut tokens = Vec::new();
    for _ in 0..3 {
        tokens.extend(stream.next().await.unwrap().unwrap().tokens);
    }
    // The healthy worker joins while the first one hangs.
    workers.insert(2);
    while let Some(chunk) = stream.next().await {
        tokens.extend(chunk.unwrap().tokens);
    }
    let prompt: Vec<u32> = (1..=10).collect();
    assert_eq!(tokens, answer(&prompt, 12), "no token twice, none missing");
    assert_eq!(start.elapsed(), STALL, "detected at the stall deadline");
    assert!(workers.router.is_ejected(WorkerId::new(1)));
    {
        let attempts = workers.attempts.lock().unwrap();
        assert_eq!(attempts.len(), 2);
        assert!(
            attempts[0].cancel.is_cancelled(),
            "the hung work is cancelled"
        );
        assert_eq!(attempts[1].worker, 2);
        assert_eq!(
            attempts[1].prompt.len(),
            13,
            "the prompt and the tokens streamed"
        );
    }

    // New requests avoid the ejected worker.
    for i in 0..4 {
        let mut engine = workers.migrate();
        let generation = engine.generate_all(request(&format!("n{i}"))).await;
        assert_eq!(generation.unwrap().tokens, answer(&prompt, 12));
    }
    assert_eq!(workers.routed(), [1, 2, 2, 2, 2, 2]);

    // While it still hangs, canaries time out and it stays out.
    let checks = tokio::spawn(workers.router.health_checks());
    until("two canaries", || workers.canaries(1) >= 2).await;
    assert_eq!(workers.canaries(1), 2);
    assert_eq!(workers.canaries(2), 0, "idle probes are off");
    assert!(workers.router.is_ejected(WorkerId::new(1)));

    // Once it answers, the next canary brings it back, and it is routed to again.
    workers.faulty.store(false, Ordering::SeqCst);
    until("the worker's return", || {
        !workers.router.is_ejected(WorkerId::new(1))
    })
    .await;
    assert_eq!(workers.canaries(1), 3);
    assert!(!workers.router.is_ejected(WorkerId::new(1)));
    for i in 0..2 {
        let mut engine = workers.router.clone();
        engine
            .generate_all(request(&format!("b{i}")))
            .await
            .unwrap();
    }
    let mut back = workers.routed()[6..].to_vec();
    back.sort_unstable();
    assert_eq!(back, [1, 2], "both workers are routed to");
    checks.abort();
}

#[tokio::test(start_paused = true)]
async fn a_stalled_attempt_ends_with_an_unavailable_error_naming_the_worker() {
    let workers = Workers::new(config(), Fault::Hang { after: 0 });
    workers.insert(1);
    let mut stream = workers.router.clone().generate(request("r")).await.unwrap();
    let error = stream.next().await.unwrap().unwrap_err();
    assert_eq!(error.class(), ErrorClass::Unavailable);
    let stalled = Stalled::of(&error).unwrap();
    assert_eq!((stalled.worker, stalled.timeout), (WorkerId::new(1), STALL));
    assert!(stream.next().await.is_none());
    // Its only worker ejected, the router refuses at once.
    let refused = workers.router.clone().generate(request("r2")).await;
    assert_eq!(
        refused.err().map(|e| e.class()),
        Some(ErrorClass::Unavailable)
    );
}

#[tokio::test(start_paused = true)]
async fn without_a_stall_timeout_a_hung_stream_is_left_alone() {
    let workers = Workers::new(config().stall_timeout(None), Fault::Hang { after: 0 });
    workers.insert(1);
    let mut stream = workers.router.clone().generate(request("r")).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(3600), stream.next()).await;
    assert!(waited.is_err());
    assert!(!workers.router.is_ejected(WorkerId::new(1)));
}

#[tokio::test(start_paused = true)]
async fn a_whole_answer_may_come_later_than_the_stall_timeout() {
    let router = RouterService::builder(BlockSize::new(4).unwrap())
        .policy(RoundRobin::new())
        .health(config())
        .build();
    // A worker that sends its whole answer in one chunk, after ten stall timeouts (of paused
    // time, which tokio advances at once: the test waits for nothing real).
    let slow = tower::service_fn(|request: GenerateRequest| async move {
        let answer = futures::stream::once(async {
            tokio::time::sleep(STALL * 10).await;
            Ok(TokenChunk {
                tokens: vec![7, 8],
                finish_reason: Some(FinishReason::Length),
                ..TokenChunk::default()
            })
        });
        Ok::<_, Error>(TokenStream::new(
            answer,
            request.cancellation().child_token(),
        ))
    })
    .boxed_engine();
    router.insert_worker(WorkerId::new(1), slow);
    let mut whole = request("whole");
    whole.delivery = Delivery::Whole;
    let answer = router.clone().generate_all(whole).await.unwrap();
    assert_eq!(answer.tokens, [7, 8]);
    assert!(!router.is_ejected(WorkerId::new(1)));
    // To a client reading the stream, the same silence is a stall.
    let error = router
        .clone()
        .generate_all(request("streamed"))
        .await
        .unwrap_err();
    assert!(Stalled::of(&error).is_some(), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_refuses_in_a_row_is_ejected_after_the_limit() {
    let workers = Workers::new(config().eject_after(3), Fault::Refuse);
    workers.insert(1);
    for _ in 0..3 {
        assert!(!workers.router.is_ejected(WorkerId::new(1)));
        let refused = workers.router.clone().generate(request("r")).await;
        assert_eq!(
            refused.err().map(|e| e.class()),
            Some(ErrorClass::Unavailable)
        );
    }
    assert!(workers.router.is_ejected(WorkerId::new(1)));
    assert_eq!(workers.routed(), [1, 1, 1]);
}

#[tokio::test(start_paused = true)]
async fn ejection_stops_at_the_cap_and_goes_on_once_an_ejected_worker_leaves() {
    // Three of four workers refuse; at most half of the workers may be out.
    let health = config().eject_after(1).max_ejected_percent(50);
    let workers = Workers::failing(health, Fault::Refuse, 3);
    for id in 1..=4 {
        workers.insert(id);
    }
    let ejected = |id| workers.router.is_ejected(WorkerId::new(id));
    let mut served = 0;
    for n in 0..8 {
        let mut router = workers.router.clone();
        let answer = router.generate_all(request(&format!("r{n}"))).await;
        served += usize::from(answer.is_ok());
    }
    // Two of the failing workers are ejected; the third stays routed, since 2 of 4 are out,
    // and is asked again and again; every request to the healthy one is served.
    let out: Vec<u64> = (1..=4).filter(|&id| ejected(id)).collect();
    assert_eq!(out.len(), 2, "{out:?}");
    let kept = (1..=3).find(|id| !out.contains(id)).unwrap();
    let asked = |id| workers.routed().iter().filter(|&&w| w == id).count();
    assert!(asked(kept) >= 2, "{:?}", workers.routed());
    assert_eq!(served, asked(4));

    // One ejected worker leaves: 1 of 3 is out, below the cap, and the kept one's next refusal
    // ejects it.
    workers.router.remove_worker(WorkerId::new(out[0]));
    let before = asked(kept);
    for n in 0..2 {
        let mut router = workers.router.clone();
        let answer = router.generate_all(request(&format!("s{n}"))).await;
        served += usize::from(answer.is_ok());
    }
    assert_eq!(asked(kept), before + 1, "{:?}", workers.routed());
    assert!(ejected(out[1]) && ejected(kept) && !ejected(4));
    assert_eq!(served, asked(4));
}

#[tokio::test(start_paused = true)]
async fn an_idle_worker_that_hangs_is_ejected_by_a_canary() {
    let workers = Workers::new(config().probe_idle(true), Fault::Hang { after: 0 });
    workers.insert(1);
    workers.insert(2);
    let checks = tokio::spawn(workers.router.health_checks());
    until("the ejection and a canary of the healthy worker", || {
        workers.router.is_ejected(WorkerId::new(1)) && workers.canaries(2) >= 1
    })
    .await;
    assert!(!workers.router.is_ejected(WorkerId::new(2)));
    assert!(workers.canaries(2) >= 1);
    // Every new request goes to the healthy worker.
    workers
        .router
        .clone()
        .generate_all(request("r"))
        .await
        .unwrap();
    assert_eq!(workers.routed(), [2]);
    checks.abort();
}

/// A report that an engine runs `running` and queues `waiting` requests, read now, trusted
/// for `fresh_for`.
fn report(running: u32, waiting: u32, fresh_for: Duration) -> ReportedLoad {
    ReportedLoad::new(running, waiting, Instant::now().into_std(), fresh_for)
}

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test(start_paused = true)]
async fn a_late_idle_canary_does_not_eject_a_worker_whose_engine_reports_other_work() {
    let workers = Workers::new(config().probe_idle(true), Fault::Hang { after: 0 });
    workers.insert(1);
    workers.insert(2);
    let one = WorkerId::new(1);
    // Its engine (shared with other clients) runs 3 requests and queues 1: a canary waits
    // behind them.
    workers.router.report_load(one, Some(report(3, 1, HOUR)));
    let checks = tokio::spawn(workers.router.health_checks());
    // Three canaries sent: the first two have missed their deadline (1 s, sent 5 s apart).
    until("three canaries", || workers.canaries(1) >= 3).await;
    assert!(!workers.router.is_ejected(one));
    assert!(workers.router.selector().workers().contains(&one));
    // Once it reports itself idle, a silent canary is a hang again, and ejects it.
    workers.router.report_load(one, Some(report(0, 0, HOUR)));
    until("the ejection", || workers.router.is_ejected(one)).await;
    assert!(!workers.router.selector().workers().contains(&one));
    assert!(!workers.router.is_ejected(WorkerId::new(2)));
    checks.abort();
}

#[tokio::test(start_paused = true)]
async fn a_stale_report_of_other_work_does_not_excuse_a_late_canary() {
    let workers = Workers::new(config().probe_idle(true), Fault::Hang { after: 0 });
    workers.insert(1);
    // Trusted for 2 s: stale when the first canary's deadline passes (at 6 s).
    workers
        .router
        .report_load(WorkerId::new(1), Some(report(3, 1, Duration::from_secs(2))));
    let checks = tokio::spawn(workers.router.health_checks());
    until("the ejection", || {
        workers.router.is_ejected(WorkerId::new(1))
    })
    .await;
    assert_eq!(workers.canaries(1), 1);
    checks.abort();
}

#[tokio::test(start_paused = true)]
async fn a_request_waits_while_its_only_worker_is_busy_by_report_and_goes_when_it_frees() {
    let router = RouterService::builder(BlockSize::new(4).unwrap())
        .thresholds(BusyThresholds {
            max_active_requests: Some(2),
            ..BusyThresholds::default()
        })
        .queue(QueueOrder::Fcfs, 8)
        .build();
    router.insert_worker(WorkerId::new(1), EchoEngine::new());
    // Nothing booked, but its server runs one request and queues another: busy at 2.
    router.report_load(WorkerId::new(1), Some(report(1, 1, HOUR)));
    let waiting = tokio::spawn({
        let mut router = router.clone();
        async move { router.generate_all(request("r")).await }
    });
    until("the request queued", || router.queued() == 1).await;
    // However long it waits (virtual time), it is not placed while the report stands.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(router.queued(), 1);
    assert!(!waiting.is_finished());
    // The server's queue drains: the report wakes the request, which goes.
    router.report_load(WorkerId::new(1), Some(report(1, 0, HOUR)));
    let answer = waiting.await.unwrap().unwrap();
    assert_eq!(answer.tokens.len(), 10);
    assert_eq!(router.queued(), 0);
}

/// Wait, on the paused clock, until `done` holds; fail after a minute of virtual time.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {what} within a minute"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
