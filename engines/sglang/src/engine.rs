//! [`SglangEngine`]: an [`Engine`](dynamo_core::Engine) over SGLang's native `/generate`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use dynamo_core::{
    Delivery, Error, GenerateRequest, Token, TokenChunk, TokenLogProb, TokenStream, Tokens,
};
use dynamo_upstream::{
    EventHandler, HttpClient, error_from_status, event_stream, read_body, retry_after, whole_answer,
};
use futures::future::BoxFuture;
use tower::Service;

use crate::logprobs;
use crate::wire::{self, Event, MetaInfo};

/// The largest server-sent event accepted (1 MiB).
const MAX_EVENT_BYTES: usize = 1 << 20;

/// The largest error body read (64 KiB).
const MAX_ERROR_BODY: usize = 64 << 10;

/// The largest whole (non-streamed) answer accepted (16 MiB).
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// Attempts started by this process, so that each `rid` sent is unique even when a router
/// sends the same request again.
static ATTEMPTS: AtomicU64 = AtomicU64::new(0);

/// An [`Engine`](dynamo_core::Engine) that sends each request to an SGLang server's
/// `/generate` with its prompt as `input_ids` and streams the output ids back; cheap to clone.
///
/// Each event's `meta_info.completion_tokens` says how many ids the answer holds so far, so the
/// new ones are read correctly whether the server streams deltas
/// (`--incremental-streaming-output`) or the whole answer so far (the default of most versions).
/// A request whose client reads the answer whole ([`Delivery::Whole`]) is sent with
/// `"stream": false`, and its one answer object comes back as one chunk.
/// The last chunk carries `meta_info`'s `prompt_tokens`, `cached_tokens` and
/// `completion_tokens`. With log-probabilities asked for, each chunk carries its tokens'
/// scores and alternatives, the last entries of `meta_info.output_token_logprobs` and
/// `output_top_logprobs` (lists that hold every token so far or only the event's, by version
/// and mode; only the new tokens' entries are parsed). With the prompt's asked for
/// (`prompt_logprobs`, a whole answer only), the answer's chunk carries them too, from
/// `meta_info.input_token_logprobs` and `input_top_logprobs`. Errors take the class of the
/// HTTP status SGLang gives, as `dynamo_upstream` maps statuses: an error answer's status, an
/// `{"error": …}` event's `code` (SGLang sends one for a request it refuses after the stream
/// began; `invalid_request` before 0.5.13, which sends no code), a `finish_reason` of type
/// `abort`'s `status_code` (`unavailable` without one: the request was aborted from outside,
/// not refused); a stream that ends before the answer finished is `unavailable`.
///
/// # Cancel safety
///
/// Dropping the returned stream, or cancelling the request, closes the connection; SGLang
/// aborts a request whose client went away.
#[derive(Debug, Clone)]
pub struct SglangEngine {
    client: HttpClient,
}

impl SglangEngine {
    /// An engine over `client`'s server.
    pub fn new(client: HttpClient) -> Self {
        SglangEngine { client }
    }
}

impl Service<GenerateRequest> for SglangEngine {
    type Response = TokenStream;
    type Error = Error;
    type Future = BoxFuture<'static, Result<TokenStream, Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: GenerateRequest) -> Self::Future {
        let client = self.client.clone();
        Box::pin(start(client, request))
    }
}

async fn start(client: HttpClient, request: GenerateRequest) -> Result<TokenStream, Error> {
    request.validate()?;
    let attempt = ATTEMPTS.fetch_add(1, Ordering::Relaxed);
    let rid = format!("{}-{attempt}", request.id);
    let body = serde_json::to_vec(&wire::body(&request, &rid)?)
        .map_err(|error| Error::internal("cannot encode the request").with_source(error))?;
    let cancel = request.cancellation().child_token();
    let response = tokio::select! {
        response = client.post_json("/generate", Bytes::from(body)) => response?,
        () = cancel.cancelled() => return Err(Error::Cancelled),
    };
    let (head, body) = response.into_parts();
    if !head.status.is_success() {
        let bytes = read_body(body, MAX_ERROR_BODY).await?;
        let hint = retry_after(&head.headers);
        return Err(error_from_status(head.status.as_u16(), hint, &bytes));
    }
    let sampling = &request.sampling;
    let answer = Answer {
        emitted: Vec::new(),
        finished: false,
        output_top: sampling.logprobs.map(|top| top as usize),
        prompt: sampling.prompt_logprobs.map(|_| request.tokens.clone()),
    };
    Ok(match request.delivery {
        // One answer object, the shape of a stream's last event: every id and the usage.
        Delivery::Whole => whole_answer(body, answer, MAX_ANSWER_BYTES, cancel),
        Delivery::Streamed => event_stream(body, answer, MAX_EVENT_BYTES, cancel),
    })
}

/// What an answer's events say, as they arrive.
struct Answer {
    /// The ids passed on so far.
    emitted: Vec<Token>,
    /// A `finish_reason` arrived: the last chunk is queued.
    finished: bool,
    /// The alternatives asked for of each output token, when its log-probabilities are: SGLang
    /// sends as many as the prompt's need, which may be more.
    output_top: Option<usize>,
    /// The prompt's tokens, while its log-probabilities are asked for and not yet passed on.
    prompt: Option<Tokens>,
}

impl EventHandler for Answer {
    fn on_event(&mut self, data: &str, out: &mut VecDeque<TokenChunk>) -> Result<bool, Error> {
        if data.trim() == "[DONE]" {
            self.on_end(out)?;
            return Ok(true);
        }
        self.on_answer(data, out)?;
        Ok(false)
    }

    fn on_end(&mut self, _out: &mut VecDeque<TokenChunk>) -> Result<(), Error> {
        if self.finished {
            Ok(())
        } else {
            Err(Error::unavailable(
                "the SGLang stream ended before the answer finished",
            ))
        }
    }
}

impl Answer {
    fn on_answer(&mut self, data: &str, out: &mut VecDeque<TokenChunk>) -> Result<(), Error> {
        let event: Event = serde_json::from_str(data).map_err(|error| {
            Error::internal("SGLang sent an event that is not an answer").with_source(error)
        })?;
        if let Some(error) = &event.error {
            return Err(wire::error_event(error));
        }
        let ids = event.output_ids.unwrap_or_default();
        let total = event
            .meta_info
            .as_ref()
            .and_then(|meta| meta.completion_tokens)
            .map(|total| total as usize);
        let mut new = self.new_ids(&ids, total);
        let mut log_probs = self.output_log_probs(event.meta_info.as_ref(), &new)?;
        let prompt_log_probs = self.prompt_log_probs(event.meta_info.as_ref())?;
        let first_chunk = out.len();
        // A matched stop token is not part of the answer (core's contract), nor its score.
        let matched = event
            .meta_info
            .as_ref()
            .and_then(|meta| meta.finish_reason.as_ref())
            .and_then(|reason| reason.get("matched"))
            .and_then(serde_json::Value::as_u64);
        if matched.is_some_and(|stop| new.last().map(|&id| u64::from(id)) == Some(stop)) {
            new.pop();
            if let Some(scores) = &mut log_probs {
                scores.pop();
            }
        }
        let pushed = !new.is_empty();
        if pushed {
            self.emitted.extend_from_slice(&new);
            out.push_back(TokenChunk {
                tokens: new,
                log_probs,
                ..TokenChunk::default()
            });
        }
        if let Some(meta) = &event.meta_info
            && let Some(reason) = meta.finish_reason.as_ref().filter(|r| !r.is_null())
        {
            let reason = wire::finish(reason)?;
            if !self.finished {
                self.finished = true;
                let usage = Some(meta.usage());
                // The finish rides on this event's tokens when it has some, so that a whole
                // answer is one chunk, scores and all.
                match out.back_mut().filter(|_| pushed) {
                    Some(last) => {
                        last.finish_reason = Some(reason);
                        last.usage = usage;
                    }
                    None => out.push_back(TokenChunk::finish(reason, usage)),
                }
            }
        }
        // The prompt's scores ride on the event's first chunk (one of their own without one).
        if prompt_log_probs.is_some() {
            match out.get_mut(first_chunk) {
                Some(chunk) => chunk.prompt_log_probs = prompt_log_probs,
                None => out.push_back(TokenChunk {
                    prompt_log_probs,
                    ..TokenChunk::default()
                }),
            }
        }
        Ok(())
    }

    /// The scores of `new`, an event's new ids, when they are asked for, with the alternatives
    /// asked for.
    fn output_log_probs(
        &self,
        meta: Option<&MetaInfo>,
        new: &[Token],
    ) -> Result<Option<Vec<TokenLogProb>>, Error> {
        let (Some(meta), Some(keep)) = (meta, self.output_top) else {
            return Ok(None);
        };
        let Some(scores) = meta
            .output_token_logprobs
            .as_deref()
            .filter(|_| !new.is_empty())
        else {
            return Ok(None);
        };
        let mut scores = logprobs::of_new(scores, meta.output_top_logprobs.as_deref(), new)?;
        for score in &mut scores {
            score.top.truncate(keep);
        }
        Ok(Some(scores))
    }

    /// The prompt's scores, from the first event that carries them while they are asked for.
    fn prompt_log_probs(
        &mut self,
        meta: Option<&MetaInfo>,
    ) -> Result<Option<Vec<TokenLogProb>>, Error> {
        let Some(scores) = meta.and_then(|meta| meta.input_token_logprobs.as_deref()) else {
            return Ok(None);
        };
        let Some(prompt) = self.prompt.take() else {
            return Ok(None);
        };
        let top = meta.and_then(|meta| meta.input_top_logprobs.as_deref());
        logprobs::of_prompt(scores, top, prompt.as_slice()).map(Some)
    }

    /// The ids of `ids` not passed on yet: the last `total − emitted` when the server says how
    /// many it has produced, else the part past what was passed on when `ids` repeats it.
    fn new_ids(&self, ids: &[Token], total: Option<usize>) -> Vec<Token> {
        let seen = self.emitted.len();
        let count = match total {
            Some(total) => total.saturating_sub(seen).min(ids.len()),
            None if ids.len() > seen && ids.starts_with(&self.emitted) => ids.len() - seen,
            None if ids.starts_with(&self.emitted) && seen > 0 => 0,
            None => ids.len(),
        };
        ids[ids.len() - count..].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::logprobs::PARSED;

    /// The events of a streamed answer of `length` tokens as SGLang 0.5.3 sends them with
    /// `return_logprob` and two alternatives: each event's `output_ids` holds its one new id,
    /// its score lists every token so far. Token `i` is `1000 + i`, scored `-(i % 7) / 8`.
    fn cumulative_scored_events(length: u32) -> Vec<String> {
        // The lists' text grows by one entry an event (JSON built as text: a `Value` per
        // event would cost what this measures).
        let mut tokens = String::new();
        let mut top = String::new();
        (1..=length)
            .map(|i| {
                let (id, score, comma) = (1000 + i, -f64::from(i % 7) / 8.0, ",");
                let comma = if i == 1 { "" } else { comma };
                tokens += &format!("{comma}[{score:?},{id},null]");
                top += &format!("{comma}[[{score:?},{id},null],[-4.0,{},null]]", 5000 + i);
                let finish = if i == length {
                    json!({"type": "length", "length": length}).to_string()
                } else {
                    "null".to_owned()
                };
                format!(
                    r#"{{"text":"","output_ids":[{id}],"meta_info":{{"id":"r1-0","finish_reason":{finish},"prompt_tokens":6,"output_token_logprobs":[{tokens}],"output_top_logprobs":[{top}],"completion_tokens":{i},"cached_tokens":0}}}}"#
                )
            })
            .collect()
    }

    /// An answer asked for two alternatives of each output token's log-probability.
    fn answer() -> Answer {
        Answer {
            emitted: Vec::new(),
            finished: false,
            output_top: Some(2),
            prompt: None,
        }
    }

    /// The chunks of `events`, read as the engine reads a stream.
    fn read(events: &[String]) -> Vec<TokenChunk> {
        let mut answer = answer();
        let mut out = VecDeque::new();
        for event in events {
            answer.on_event(event, &mut out).expect("an answer event");
        }
        answer.on_event("[DONE]", &mut out).expect("the end");
        out.into()
    }

    #[test]
    fn a_long_scored_stream_parses_only_each_new_tokens_scores() {
        let length = 1000;
        let events = cumulative_scored_events(length);
        let before = PARSED.get();
        let chunks = read(&events);
        let parsed = PARSED.get() - before;
        let scores: Vec<_> = chunks
            .iter()
            .flat_map(|chunk| chunk.log_probs.clone().unwrap_or_default())
            .collect();
        assert_eq!(scores.len(), length as usize);
        for (i, score) in (1..=length).zip(&scores) {
            assert_eq!(score.token, 1000 + i);
            assert_eq!(score.logprob, -((i % 7) as f32) / 8.0);
            assert_eq!(score.top[1], (5000 + i, -4.0));
        }
        // Entries the stream carries, each of which the engine parsed before: every event's
        // two lists hold every token so far.
        let sent: usize = events
            .iter()
            .map(|event| {
                let event: wire::Event<'_> = serde_json::from_str(event).expect("an event");
                let meta = event.meta_info.expect("meta_info");
                meta.output_token_logprobs.map_or(0, |l| l.len())
                    + meta.output_top_logprobs.map_or(0, |l| l.len())
            })
            .sum();
        assert_eq!(sent, 1_001_000);
        // Now one score and one list of alternatives per token: 500.5 times fewer.
        assert_eq!(parsed, 2_000);
    }

    /// An event as the engine read it before: every entry of the lists parsed.
    #[derive(serde::Deserialize)]
    #[expect(dead_code, reason = "read only to be parsed, as the engine did")]
    struct EveryEntryEvent {
        output_ids: Option<Vec<Token>>,
        meta_info: Option<EveryEntryMeta>,
    }

    type Scored = (Option<f32>, Token, serde::de::IgnoredAny);

    #[derive(serde::Deserialize)]
    #[expect(dead_code, reason = "read only to be parsed, as the engine did")]
    struct EveryEntryMeta {
        finish_reason: Option<serde_json::Value>,
        prompt_tokens: u32,
        completion_tokens: Option<u32>,
        cached_tokens: u32,
        output_token_logprobs: Option<Vec<Scored>>,
        output_top_logprobs: Option<Vec<Option<Vec<Scored>>>>,
    }

    /// CPU time of this thread so far, in nanoseconds (Linux's schedstat).
    fn cpu_ns() -> u64 {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|stat| stat.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// The CPU time of reading a 1,000-token scored stream, against parsing its events as the
    /// engine did before (only the parse, not the chunks: the baseline is favoured), five
    /// times each, interleaved. Prints; asserts nothing about time.
    #[test]
    #[ignore = "a measurement: run with --release -- --ignored --nocapture"]
    fn scored_stream_cost_against_parsing_every_entry() {
        let events = cumulative_scored_events(1000);
        let bytes: usize = events.iter().map(String::len).sum();
        let mut ratios = Vec::new();
        for round in 0..5 {
            let start = cpu_ns();
            for event in &events {
                let parsed: EveryEntryEvent = serde_json::from_str(event).expect("an event");
                std::hint::black_box(parsed);
            }
            let every_entry = cpu_ns() - start;
            let start = cpu_ns();
            std::hint::black_box(read(&events));
            let new_only = cpu_ns() - start;
            let ratio = every_entry as f64 / new_only.max(1) as f64;
            println!(
                "round {round}: {bytes} bytes of events, every entry parsed {:.1} ms, new \
                 entries only {:.1} ms: {ratio:.2}x",
                every_entry as f64 / 1e6,
                new_only as f64 / 1e6
            );
            ratios.push(ratio);
        }
        println!("ratios {ratios:.2?}");
    }
}
