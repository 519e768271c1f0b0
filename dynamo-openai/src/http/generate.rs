//! The pipeline both endpoints share: a prepared request goes to the model's engine, and its
//! token stream comes back as text deltas, cut at stop tokens and stop strings, with the
//! metrics recorded on the way.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use dynamo_core::{FinishReason, GenerateRequest, TokenChunk, TokenLogProb, TokenStream, Usage};
use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::metrics;
use crate::ApiError;
use crate::preprocess::{IncrementalDecoder, StopMatcher};
use crate::registry::ModelEntry;

/// What the pipeline yields.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TextEvent {
    /// New text, with the log-probabilities of the tokens released since the last delta (when
    /// asked for; a delta may carry log-probabilities and no text while a character or a
    /// possible stop string is held back).
    Delta {
        text: String,
        log_probs: Vec<TokenLogProb>,
    },
    /// The end, with the OpenAI finish reason and the token counts.
    Done { reason: FinishReason, usage: Usage },
    /// The log-probabilities of the prompt's tokens after the first, before any text, when
    /// the request asked for them.
    Prompt { log_probs: Vec<TokenLogProb> },
}

/// Counts requests in flight; a request holds one slot until its stream is dropped.
#[derive(Debug)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    limit: usize,
}

impl InFlight {
    pub(crate) fn new(limit: usize) -> Self {
        InFlight {
            count: AtomicUsize::new(0),
            limit,
        }
    }

    /// A slot, or an overload error when all are taken.
    pub(crate) fn acquire(
        self: &Arc<Self>,
        gauge: ::metrics::Gauge,
    ) -> Result<InFlightSlot, ApiError> {
        let taken = self.count.fetch_add(1, Ordering::AcqRel);
        if taken >= self.limit {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return Err(dynamo_core::Error::overloaded(format!(
                "the gateway is serving its limit of {} requests",
                self.limit
            ))
            .into());
        }
        gauge.increment(1.0);
        Ok(InFlightSlot {
            owner: self.clone(),
            gauge,
        })
    }
}

/// One request's slot; released on drop.
#[derive(Debug)]
pub(crate) struct InFlightSlot {
    owner: Arc<InFlight>,
    gauge: ::metrics::Gauge,
}

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        self.owner.count.fetch_sub(1, Ordering::AcqRel);
        self.gauge.decrement(1.0);
    }
}

/// Send `request` to the model's engine, for all its [`n`](GenerateRequest::n) choices at once
/// (an engine that forks streams them all). Errors before the first token (overload, an
/// invalid request, an unreachable worker) come back here, so the client gets the matching
/// status.
pub(crate) async fn start(
    entry: Arc<ModelEntry>,
    mut request: GenerateRequest,
    slot: Option<InFlightSlot>,
    endpoint: &'static str,
) -> Result<TextStream, ApiError> {
    let started = Instant::now();
    let prompt_tokens = u32::try_from(request.tokens.len()).unwrap_or(u32::MAX);
    let mut stop_tokens = request.stop.stop_token_ids.clone();
    if !request.stop.ignore_eos {
        stop_tokens.extend_from_slice(entry.tokenizer.eos_token_ids());
    }
    // A choice a stop string ends stops on the engine too (one that forks), not only here.
    let cancels = match request.n {
        0 | 1 => Arc::from([]),
        _ => request.choice_tokens(),
    };
    let choices: Vec<ChoiceText> = (0..request.n)
        .map(|index| ChoiceText {
            cancel: cancels.get(index as usize).cloned(),
            decoder: IncrementalDecoder::default(),
            stops: StopMatcher::new(request.stop.stop_strings.clone()),
            usage: Usage {
                prompt_tokens,
                ..Usage::default()
            },
            log_probs: Vec::new(),
            done: false,
        })
        .collect();
    let tokens = entry.engine.clone().oneshot(request).await?;
    Ok(TextStream {
        entry,
        endpoint,
        tokens: Some(tokens),
        open: choices.len(),
        choices,
        stop_tokens,
        pending: VecDeque::new(),
        started,
        last_token: None,
        slot,
    })
}

/// What one choice's text has reached.
struct ChoiceText {
    decoder: IncrementalDecoder,
    stops: StopMatcher,
    usage: Usage,
    /// Log-probabilities of tokens whose text has not been released yet.
    log_probs: Vec<TokenLogProb>,
    done: bool,
    /// Stops this choice alone on an engine that forks (see
    /// [`GenerateRequest::choice_tokens`]).
    cancel: Option<CancellationToken>,
}

/// The text of one engine call's choices, as a stream of `(choice, TextEvent)` ending with a
/// `Done` for every choice.
///
/// Cancel safety: dropping it drops the engine's token stream, which cancels the generation.
pub(crate) struct TextStream {
    entry: Arc<ModelEntry>,
    endpoint: &'static str,
    /// `None` once every choice finished: dropping it cancels the engine at once, even while
    /// the client still holds this stream.
    tokens: Option<TokenStream>,
    choices: Vec<ChoiceText>,
    /// Choices not done yet.
    open: usize,
    stop_tokens: Vec<u32>,
    pending: VecDeque<(u32, TextEvent)>,
    started: Instant,
    last_token: Option<Instant>,
    /// The request's in-flight slot. Of the streams of a request fanned out to one engine call
    /// per choice, the first holds it, and it alone counts the request in the metrics.
    slot: Option<InFlightSlot>,
}

impl TextStream {
    fn on_chunk(&mut self, mut chunk: TokenChunk) -> Result<(), ApiError> {
        let index = chunk.index;
        match self.choices.get(index as usize) {
            None => {
                let choices = self.choices.len();
                let message = format!("the engine sent choice {index} of {choices}");
                return Err(dynamo_core::Error::internal(message).into());
            }
            // A choice the stop strings ended while the engine went on.
            Some(choice) if choice.done => return Ok(()),
            Some(_) => {}
        }
        if let Some(log_probs) = chunk.prompt_log_probs.take() {
            self.pending
                .push_back((index, TextEvent::Prompt { log_probs }));
        }
        if index == 0 {
            self.note_timing(chunk.tokens.len());
        }
        let choice = &mut self.choices[index as usize];
        let mut tokens = chunk.tokens.as_slice();
        let stop_at = tokens.iter().position(|t| self.stop_tokens.contains(t));
        if let Some(at) = stop_at {
            tokens = &tokens[..at];
        }
        choice.usage.completion_tokens += u32::try_from(tokens.len()).unwrap_or(u32::MAX);
        if let Some(log_probs) = chunk.log_probs {
            // One entry per token; a stop token's entry goes with it.
            choice
                .log_probs
                .extend(log_probs.into_iter().take(tokens.len()));
        }
        if let Some(usage) = chunk.usage {
            choice.usage.cached_tokens = usage.cached_tokens;
        }
        let text = choice
            .decoder
            .push(self.entry.tokenizer.as_ref(), tokens)
            .map_err(|error| dynamo_core::Error::internal(error.to_string()))?;
        if self.release(index, &text) {
            return Ok(());
        }
        match (stop_at, chunk.finish_reason) {
            (Some(_), _) => self.finish(index, FinishReason::Stop)?,
            (None, Some(reason)) => self.finish(index, reason)?,
            (None, None) => {}
        }
        Ok(())
    }

    /// Pass a choice's text through the stop strings; returns whether one ended the choice.
    fn release(&mut self, index: u32, text: &str) -> bool {
        let choice = &mut self.choices[index as usize];
        let (released, stopped) = choice.stops.push(text);
        if !released.is_empty() {
            let log_probs = std::mem::take(&mut choice.log_probs);
            self.pending.push_back((
                index,
                TextEvent::Delta {
                    text: released,
                    log_probs,
                },
            ));
        }
        if stopped {
            self.done(index, FinishReason::Stop);
        }
        stopped
    }

    /// Flush what a choice's decoder and stop matcher hold, then end it.
    fn finish(&mut self, index: u32, reason: FinishReason) -> Result<(), ApiError> {
        let choice = &mut self.choices[index as usize];
        let tail = choice
            .decoder
            .finish(self.entry.tokenizer.as_ref())
            .map_err(|error| dynamo_core::Error::internal(error.to_string()))?;
        if self.release(index, &tail) {
            return Ok(());
        }
        let choice = &mut self.choices[index as usize];
        let held = choice.stops.finish();
        if !held.is_empty() {
            let log_probs = std::mem::take(&mut choice.log_probs);
            let delta = TextEvent::Delta {
                text: held,
                log_probs,
            };
            self.pending.push_back((index, delta));
        }
        self.done(index, reason);
        Ok(())
    }

    fn done(&mut self, index: u32, reason: FinishReason) {
        let choice = &mut self.choices[index as usize];
        choice.done = true;
        if let Some(cancel) = &choice.cancel {
            cancel.cancel();
        }
        if !choice.log_probs.is_empty() {
            let log_probs = std::mem::take(&mut choice.log_probs);
            let delta = TextEvent::Delta {
                text: String::new(),
                log_probs,
            };
            self.pending.push_back((index, delta));
        }
        let usage = choice.usage;
        self.entry.metrics.tokens(&self.entry.name, &usage);
        self.pending
            .push_back((index, TextEvent::Done { reason, usage }));
        self.open -= 1;
        if self.open == 0 {
            self.tokens = None;
            if self.slot.is_some() {
                let entry = &self.entry;
                entry.metrics.answered(&entry.name, self.endpoint);
            }
        }
    }

    /// End every open choice: the engine's stream ended.
    fn finish_all(&mut self) -> Result<(), ApiError> {
        for index in 0..self.choices.len() {
            if !self.choices[index].done {
                // An engine that ends without a finish reason ran out of output.
                self.finish(u32::try_from(index).unwrap_or(u32::MAX), FinishReason::Eos)?;
            }
        }
        self.tokens = None;
        Ok(())
    }

    fn note_timing(&mut self, tokens: usize) {
        if tokens == 0 {
            return;
        }
        let now = Instant::now();
        let metrics = &self.entry.metrics;
        match self.last_token {
            None => metrics.time_to_first_token(&self.entry.name, now - self.started),
            Some(last) => {
                metrics.inter_token_latency(&self.entry.name, (now - last) / tokens as u32)
            }
        }
        self.last_token = Some(now);
    }
}

impl Stream for TextStream {
    type Item = Result<(u32, TextEvent), ApiError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(event) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(event)));
            }
            let Some(tokens) = this.tokens.as_mut() else {
                return Poll::Ready(None);
            };
            let step = match ready!(tokens.poll_next_unpin(cx)) {
                Some(Ok(chunk)) => this.on_chunk(chunk),
                None => this.finish_all(),
                Some(Err(error)) => Err(ApiError::from(error)),
            };
            if let Err(error) = step {
                this.tokens = None;
                if this.slot.is_some() {
                    metrics::request_done(&this.entry.name, this.endpoint, error.status());
                }
                return Poll::Ready(Some(Err(error)));
            }
        }
    }
}
