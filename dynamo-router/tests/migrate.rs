//! Request migration over a router of test workers: a worker that fails mid-stream is replaced
//! and the client sees the answer a healthy worker gives, token for token.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on failure by design"
)]

mod common;

use common::{Attempt, answer};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dynamo_core::{
    BlockSize, BoxEngine, EngineExt, Error, ErrorClass, FinishReason, GenerateRequest, TokenChunk,
    TokenStream, Usage, WorkerId,
};
use dynamo_router::RouterService;
use dynamo_router::migrate::{Migrate, MigrationConfig, MigrationExhausted};
use futures::StreamExt;

/// How a worker fails, while the shared budget of faults lasts.
#[derive(Clone, Copy)]
enum Fault {
    /// Stream `after` tokens, then lose the connection and leave the router (as discovery
    /// removes a worker whose connection is lost).
    Die { after: usize },
    /// Stream `after` tokens, then lose the connection, and refuse the next call before leaving
    /// the router (discovery has not caught up yet).
    DieLate { after: usize },
    /// Stream `after` tokens, then end the stream without a last chunk.
    Truncate { after: usize },
    /// Stream `after` tokens, then fail with this error and stay.
    Fail { after: usize, error: fn() -> Error },
    /// Stream `after` tokens, then hold the stream open until cancelled.
    Hold { after: usize },
}

#[derive(Clone)]
struct Workers {
    router: RouterService,
    fault: Fault,
    faults_left: Arc<AtomicUsize>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    /// Workers that died and have not left the router yet.
    dead: Arc<Mutex<Vec<u64>>>,
    /// Whether each attempt asked for the prompt's log-probabilities.
    asked_prompt_logprobs: Arc<Mutex<Vec<bool>>>,
}

impl Workers {
    /// A router over `count` workers that fail as `fault` says, `faults` times in all.
    fn new(count: u64, fault: Fault, faults: usize) -> Self {
        let workers = Workers {
            router: RouterService::builder(BlockSize::new(4).unwrap()).build(),
            fault,
            faults_left: Arc::new(AtomicUsize::new(faults)),
            attempts: Arc::default(),
            dead: Arc::default(),
            asked_prompt_logprobs: Arc::default(),
        };
        for id in 1..=count {
            workers
                .router
                .insert_worker(WorkerId::new(id), workers.engine(id));
        }
        workers
    }

    fn engine(&self, id: u64) -> BoxEngine {
        let workers = self.clone();
        tower::service_fn(move |request: GenerateRequest| {
            let workers = workers.clone();
            async move {
                let mut dead = workers.dead.lock().unwrap();
                if dead.contains(&id) {
                    dead.retain(|&d| d != id);
                    workers.router.remove_worker(WorkerId::new(id));
                    return Err(Error::unavailable("cannot connect"));
                }
                drop(dead);
                Ok(workers.generate(id, &request))
            }
        })
        .boxed_engine()
    }

    fn migrate(&self, limit: u32) -> Migrate<RouterService> {
        Migrate::new(self.router.clone(), MigrationConfig::default().limit(limit))
    }

    fn generate(&self, id: u64, request: &GenerateRequest) -> TokenStream {
        let prompt = request.tokens.as_slice().to_vec();
        let max_tokens = request.limits.max_tokens.unwrap_or(16);
        let cancel = request.cancellation().child_token();
        self.attempts.lock().unwrap().push(Attempt {
            worker: id,
            prompt: prompt.clone(),
            max_tokens: request.limits.max_tokens,
            cancel: cancel.clone(),
        });
        let tokens = answer(&prompt, max_tokens);
        let mut chunks: Vec<Result<TokenChunk, Error>> =
            tokens.iter().map(|&t| Ok(TokenChunk::token(t))).collect();
        let asked = request.sampling.prompt_logprobs.is_some();
        self.asked_prompt_logprobs.lock().unwrap().push(asked);
        if asked {
            let prompt_log_probs = TokenChunk {
                prompt_log_probs: Some(Vec::new()),
                ..TokenChunk::default()
            };
            chunks.insert(0, Ok(prompt_log_probs));
        }
        let faulty = self
            .faults_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if !faulty {
            let usage = Usage {
                prompt_tokens: prompt.len() as u32,
                cached_tokens: 0,
                completion_tokens: max_tokens,
            };
            chunks.push(Ok(TokenChunk::finish(FinishReason::Length, Some(usage))));
            return TokenStream::new(futures::stream::iter(chunks), cancel);
        }
        match self.fault {
            Fault::Die { after } => {
                chunks.truncate(after);
                self.router.remove_worker(WorkerId::new(id));
                chunks.push(Err(Error::unavailable("the connection was lost")));
            }
            Fault::DieLate { after } => {
                chunks.truncate(after);
                self.dead.lock().unwrap().push(id);
                chunks.push(Err(Error::unavailable("the connection was lost")));
            }
            Fault::Truncate { after } => chunks.truncate(after),
            Fault::Fail { after, error } => {
                chunks.truncate(after);
                chunks.push(Err(error()));
            }
            Fault::Hold { after } => {
                chunks.truncate(after);
                let held = futures::stream::iter(chunks).chain(futures::stream::pending());
                return TokenStream::new(held, cancel);
            }
        }
        TokenStream::new(futures::stream::iter(chunks), cancel)
    }
}

fn request(max_tokens: u32) -> GenerateRequest {
    GenerateRequest::new("r", "m", (1..=10).collect::<Vec<_>>()).with_max_tokens(max_tokens)
}

/// Every item of a stream, the error (if any) last.
async fn items(
    mut engine: Migrate<RouterService>,
    request: GenerateRequest,
) -> Vec<Result<TokenChunk, Error>> {
    engine.generate(request).await.unwrap().collect().await
}

#[tokio::test]
async fn a_worker_that_dies_mid_stream_is_replaced_and_the_client_sees_one_answer() {
    for fault in [Fault::Die { after: 5 }, Fault::Truncate { after: 5 }] {
        let workers = Workers::new(2, fault, 1);
        let generation = workers.migrate(3).generate_all(request(12)).await.unwrap();
        let prompt: Vec<u32> = (1..=10).collect();
        let expected = answer(&prompt, 12);
        assert_eq!(generation.tokens, expected, "no token twice, none missing");
        assert_eq!(generation.finish_reason, Some(FinishReason::Length));
        let usage = Usage {
            prompt_tokens: 10,
            cached_tokens: 0,
            completion_tokens: 12,
        };
        assert_eq!(generation.usage, Some(usage), "the usage of one request");
        let attempts = workers.attempts.lock().unwrap();
        assert_eq!(attempts.len(), 2);
        let continued: Vec<u32> = prompt.iter().chain(&expected[..5]).copied().collect();
        assert_eq!(
            attempts[1].prompt, continued,
            "the prompt and the tokens streamed"
        );
        assert_eq!(attempts[1].max_tokens, Some(7));
        assert!(
            attempts[0].cancel.is_cancelled(),
            "the failed attempt is dropped"
        );
        if let Fault::Die { .. } = fault {
            assert_ne!(attempts[0].worker, attempts[1].worker, "another worker");
        }
    }
}

/// The prompt's log-probabilities came with the first attempt: the continuation does not ask
/// for them again (its prompt is longer, and the client has them).
#[tokio::test]
async fn a_continuation_does_not_ask_for_the_prompts_log_probabilities_again() {
    let workers = Workers::new(2, Fault::Die { after: 6 }, 1);
    let mut asking = request(12);
    asking.sampling.prompt_logprobs = Some(0);
    let generation = workers.migrate(3).generate_all(asking).await.unwrap();
    assert_eq!(generation.prompt_log_probs, Some(Vec::new()));
    assert_eq!(generation.tokens.len(), 12);
    assert_eq!(
        *workers.asked_prompt_logprobs.lock().unwrap(),
        [true, false]
    );
}

#[tokio::test]
async fn a_retry_refused_by_a_worker_not_yet_removed_tries_again() {
    for _ in 0..8 {
        let workers = Workers::new(2, Fault::DieLate { after: 3 }, 1);
        let generation = workers.migrate(3).generate_all(request(12)).await.unwrap();
        let prompt: Vec<u32> = (1..=10).collect();
        assert_eq!(generation.tokens, answer(&prompt, 12));
        assert_eq!(generation.usage.unwrap().completion_tokens, 12);
        let attempts = workers.attempts.lock().unwrap();
        assert_ne!(attempts[0].worker, attempts.last().unwrap().worker);
    }
}

#[tokio::test]
async fn the_migration_limit_ends_the_request_with_a_typed_error() {
    let fail = Fault::Fail {
        after: 2,
        error: || Error::unavailable("the connection was lost"),
    };
    let workers = Workers::new(3, fail, usize::MAX);
    let items = items(workers.migrate(2), request(12)).await;
    let (last, chunks) = items.split_last().unwrap();
    let tokens: Vec<u32> = chunks
        .iter()
        .flat_map(|chunk| chunk.as_ref().unwrap().tokens.clone())
        .collect();
    let prompt: Vec<u32> = (1..=10).collect();
    assert_eq!(
        tokens,
        answer(&prompt, 12)[..6],
        "two tokens from each of three attempts"
    );
    let error = last.as_ref().unwrap_err();
    assert_eq!(error.class(), ErrorClass::Unavailable);
    let exhausted = MigrationExhausted::of(error).expect("a MigrationExhausted source");
    assert_eq!((exhausted.attempts, exhausted.limit), (3, 2));
    assert_eq!(workers.attempts.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn an_error_that_is_not_migratable_reaches_the_client() {
    let fail = Fault::Fail {
        after: 2,
        error: || Error::invalid_request("the prompt is too long"),
    };
    let workers = Workers::new(2, fail, usize::MAX);
    let items = items(workers.migrate(3), request(12)).await;
    assert_eq!(items.len(), 3);
    let error = items[2].as_ref().unwrap_err();
    assert_eq!(error.class(), ErrorClass::InvalidRequest);
    assert!(MigrationExhausted::of(error).is_none());
    assert_eq!(workers.attempts.lock().unwrap().len(), 1, "not migrated");
}

#[tokio::test]
async fn dropping_the_client_stream_cancels_the_current_attempt() {
    let workers = Workers::new(2, Fault::Hold { after: 2 }, 1);
    let mut stream = workers.migrate(3).generate(request(12)).await.unwrap();
    for _ in 0..2 {
        stream.next().await.unwrap().unwrap();
    }
    let cancel = workers.attempts.lock().unwrap()[0].cancel.clone();
    assert!(!cancel.is_cancelled());
    drop(stream);
    tokio::time::timeout(Duration::from_secs(10), cancel.cancelled())
        .await
        .expect("the attempt is cancelled");
}

#[tokio::test]
async fn a_limit_of_zero_turns_migration_off() {
    let workers = Workers::new(2, Fault::Die { after: 3 }, 1);
    let items = items(workers.migrate(0), request(12)).await;
    assert_eq!(items.len(), 4);
    assert_eq!(
        items[3].as_ref().unwrap_err().class(),
        ErrorClass::Unavailable
    );
    assert_eq!(workers.attempts.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_worker_that_dies_after_its_last_token_ends_the_request_without_another_attempt() {
    let workers = Workers::new(2, Fault::Die { after: 12 }, 1);
    let generation = workers.migrate(3).generate_all(request(12)).await.unwrap();
    let prompt: Vec<u32> = (1..=10).collect();
    assert_eq!(generation.tokens, answer(&prompt, 12));
    assert_eq!(generation.finish_reason, Some(FinishReason::Length));
    assert_eq!(
        generation
            .usage
            .map(|u| (u.prompt_tokens, u.completion_tokens)),
        Some((10, 12))
    );
    assert_eq!(
        workers.attempts.lock().unwrap().len(),
        1,
        "nothing left to ask"
    );
}

#[tokio::test]
async fn a_request_of_several_choices_migrates_only_before_its_first_token() {
    let workers = Workers::new(2, Fault::Die { after: 5 }, 1);
    let items = items(workers.migrate(3), request(12).with_n(2)).await;
    let last = items.last().unwrap().as_ref().unwrap_err();
    assert_eq!(last.class(), ErrorClass::Unavailable, "{last}");
    assert_eq!(
        workers.attempts.lock().unwrap().len(),
        1,
        "no second attempt"
    );

    let workers = Workers::new(2, Fault::Die { after: 0 }, 1);
    let generation = workers
        .migrate(3)
        .generate_all(request(12).with_n(2))
        .await
        .unwrap();
    assert_eq!(generation.finish_reason, Some(FinishReason::Length));
    assert_eq!(workers.attempts.lock().unwrap().len(), 2, "retried whole");
}
