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
    pub(crate) fn acquire(self: &Arc<Self>, model: &str) -> Result<InFlightSlot, ApiError> {
        let taken = self.count.fetch_add(1, Ordering::AcqRel);
        if taken >= self.limit {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return Err(dynamo_core::Error::overloaded(format!(
                "the gateway is serving its limit of {} requests",
                self.limit
            ))
            .into());
        }
        metrics::in_flight(model, 1.0);
        Ok(InFlightSlot {
            owner: self.clone(),
            model: model.to_owned(),
        })
    }
}

/// One request's slot; released on drop.
#[derive(Debug)]
pub(crate) struct InFlightSlot {
    owner: Arc<InFlight>,
    model: String,
}

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        self.owner.count.fetch_sub(1, Ordering::AcqRel);
        metrics::in_flight(&self.model, -1.0);
    }
}

/// Send `request` to the model's engine. Errors before the first token (overload, an invalid
/// request, an unreachable worker) come back here, so the client gets the matching status.
pub(crate) async fn start(
    entry: Arc<ModelEntry>,
    request: GenerateRequest,
    slot: InFlightSlot,
    endpoint: &'static str,
) -> Result<TextStream, ApiError> {
    let started = Instant::now();
    let prompt_tokens = u32::try_from(request.tokens.len()).unwrap_or(u32::MAX);
    let mut stop_tokens = request.stop.stop_token_ids.clone();
    if !request.stop.ignore_eos {
        stop_tokens.extend_from_slice(entry.tokenizer.eos_token_ids());
    }
    let stops = StopMatcher::new(request.stop.stop_strings.clone());
    let tokens = entry.engine.clone().oneshot(request).await?;
    Ok(TextStream {
        entry,
        endpoint,
        tokens: Some(tokens),
        decoder: IncrementalDecoder::default(),
        stops,
        stop_tokens,
        usage: Usage {
            prompt_tokens,
            ..Usage::default()
        },
        pending: VecDeque::new(),
        log_probs: Vec::new(),
        started,
        last_token: None,
        _slot: slot,
    })
}

/// The text of one generation, as a stream of [`TextEvent`]s ending with `Done`.
///
/// Cancel safety: dropping it drops the engine's token stream, which cancels the generation.
pub(crate) struct TextStream {
    entry: Arc<ModelEntry>,
    endpoint: &'static str,
    /// `None` once finished: dropping it cancels the engine at once, even while the client
    /// still holds this stream.
    tokens: Option<TokenStream>,
    decoder: IncrementalDecoder,
    stops: StopMatcher,
    stop_tokens: Vec<u32>,
    usage: Usage,
    pending: VecDeque<TextEvent>,
    /// Log-probabilities of tokens whose text has not been released yet.
    log_probs: Vec<TokenLogProb>,
    started: Instant,
    last_token: Option<Instant>,
    _slot: InFlightSlot,
}

impl TextStream {
    fn on_chunk(&mut self, chunk: TokenChunk) -> Result<(), ApiError> {
        self.note_timing(chunk.tokens.len());
        let mut tokens = chunk.tokens.as_slice();
        let stop_at = tokens.iter().position(|t| self.stop_tokens.contains(t));
        if let Some(at) = stop_at {
            tokens = &tokens[..at];
        }
        self.usage.completion_tokens += u32::try_from(tokens.len()).unwrap_or(u32::MAX);
        if let Some(log_probs) = chunk.log_probs {
            // One entry per token; a stop token's entry goes with it.
            self.log_probs
                .extend(log_probs.into_iter().take(tokens.len()));
        }
        if let Some(usage) = chunk.usage {
            self.usage.cached_tokens = usage.cached_tokens;
        }
        let text = self
            .decoder
            .push(self.entry.tokenizer.as_ref(), tokens)
            .map_err(|error| dynamo_core::Error::internal(error.to_string()))?;
        if self.release(&text) {
            return Ok(());
        }
        match (stop_at, chunk.finish_reason) {
            (Some(_), _) => self.finish(FinishReason::Stop)?,
            (None, Some(reason)) => self.finish(reason)?,
            (None, None) => {}
        }
        Ok(())
    }

    /// Pass text through the stop strings; returns whether one ended the generation.
    fn release(&mut self, text: &str) -> bool {
        let (released, stopped) = self.stops.push(text);
        if !released.is_empty() {
            self.pending.push_back(TextEvent::Delta {
                text: released,
                log_probs: std::mem::take(&mut self.log_probs),
            });
        }
        if stopped {
            self.done(FinishReason::Stop);
        }
        stopped
    }

    /// Flush what the decoder and the stop matcher hold, then end.
    fn finish(&mut self, reason: FinishReason) -> Result<(), ApiError> {
        let tail = self
            .decoder
            .finish(self.entry.tokenizer.as_ref())
            .map_err(|error| dynamo_core::Error::internal(error.to_string()))?;
        if self.release(&tail) {
            return Ok(());
        }
        let held = self.stops.finish();
        if !held.is_empty() {
            self.pending.push_back(TextEvent::Delta {
                text: held,
                log_probs: std::mem::take(&mut self.log_probs),
            });
        }
        self.done(reason);
        Ok(())
    }

    fn done(&mut self, reason: FinishReason) {
        self.tokens = None;
        if !self.log_probs.is_empty() {
            self.pending.push_back(TextEvent::Delta {
                text: String::new(),
                log_probs: std::mem::take(&mut self.log_probs),
            });
        }
        metrics::tokens(&self.entry.name, &self.usage);
        metrics::request_done(&self.entry.name, self.endpoint, axum::http::StatusCode::OK);
        self.pending.push_back(TextEvent::Done {
            reason,
            usage: self.usage,
        });
    }

    fn note_timing(&mut self, tokens: usize) {
        if tokens == 0 {
            return;
        }
        let now = Instant::now();
        match self.last_token {
            None => metrics::time_to_first_token(&self.entry.name, now - self.started),
            Some(last) => {
                metrics::inter_token_latency(&self.entry.name, (now - last) / tokens as u32)
            }
        }
        self.last_token = Some(now);
    }
}

impl Stream for TextStream {
    type Item = Result<TextEvent, ApiError>;

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
                // An engine that ends without a finish reason ran out of output.
                None => this.finish(FinishReason::Eos),
                Some(Err(error)) => Err(ApiError::from(error)),
            };
            if let Err(error) = step {
                this.tokens = None;
                metrics::request_done(&this.entry.name, this.endpoint, error.status());
                return Poll::Ready(Some(Err(error)));
            }
        }
    }
}
