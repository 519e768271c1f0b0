//! One request on the model thread: its tokens, its blocks, and how its next token is sampled
//! and sent.

use std::collections::{HashSet, VecDeque};

use dynamo_core::{
    BlockHasher, Error, FinishReason, GenerateRequest, HashedBlock, RequestId, TokenChunk,
    TokenLogProb, Usage,
};
use dynamo_kvbm::{BlockId, BlockPool, Held, PinnedBlock, PrivateBlock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::fork::{Fork, Live};
use crate::grammar::Grammar;
use crate::logprobs::token_log_prob;
use crate::sampler::Sampler;

/// One choice of a request on the model thread.
pub(crate) struct Sequence {
    /// The request it answers.
    pub(crate) request: RequestId,
    /// The choice, in `0..n`.
    pub(crate) index: u32,
    pub(crate) tokens: Vec<u32>,
    pub(crate) prompt_len: usize,
    /// Tokens whose K and V are in the store.
    pub(crate) computed: usize,
    /// The sequence's full blocks, registered or pinned, in order.
    pub(crate) pinned: Vec<PinnedBlock>,
    /// The blocks after them, being filled, in order.
    pub(crate) private: VecDeque<PrivateBlock>,
    /// A disaggregated prefill: its prompt's blocks are handed over when it ends.
    pub(crate) hands_over: bool,
    /// Hashes of the sequence's full blocks, in order.
    pub(crate) hashes: Vec<HashedBlock>,
    pub(crate) hasher: BlockHasher,
    pub(crate) cached_tokens: usize,
    pub(crate) generated: u32,
    pub(crate) max_tokens: u32,
    pub(crate) min_tokens: u32,
    pub(crate) stop: HashSet<u32>,
    pub(crate) sampler: Sampler,
    /// How many alternatives to report with each token's log-probability, when asked for.
    pub(crate) logprobs: Option<u32>,
    /// The prompt tokens' log-probabilities, when asked for: collected as the prompt is
    /// computed, then sent (and `None` from then on).
    pub(crate) prompt_log_probs: Option<PromptLogProbs>,
    /// The output format's grammar, when the request has one.
    pub(crate) grammar: Option<Grammar>,
    pub(crate) output: mpsc::Sender<Result<TokenChunk, Error>>,
    pub(crate) cancel: CancellationToken,
    /// Its own choice's token, where the frontend may end the choice alone.
    pub(crate) choice_cancel: Option<CancellationToken>,
    /// On the first choice of a request for several, until its prompt is computed: how to make
    /// the others.
    pub(crate) fork: Option<Box<Fork>>,
    /// How many choices of the request still run.
    pub(crate) live: Live,
}

/// The log-probabilities of a prompt's tokens after the first, as they are computed.
pub(crate) struct PromptLogProbs {
    /// How many alternatives to report with each.
    pub(crate) top: u32,
    /// Those computed so far: entry `p` is the token at position `p + 1`'s.
    pub(crate) collected: Vec<TokenLogProb>,
}

impl PromptLogProbs {
    /// Take in the logits at prompt position `position`, which give the next token's
    /// log-probability; a position already taken in (a preempted sequence computes its
    /// prompt again) is skipped.
    pub(crate) fn take_in(&mut self, tokens: &[u32], position: usize, logits: &[f32]) {
        if position == self.collected.len()
            && let Some(&next) = tokens.get(position + 1)
        {
            let entry = token_log_prob(logits, next, self.top as usize);
            self.collected.push(entry);
        }
    }
}

impl Sequence {
    /// Whether it is to stop: its request cancelled, its client gone, or its own choice ended
    /// by the frontend.
    pub(crate) fn is_gone(&self) -> bool {
        self.cancel.is_cancelled()
            || self.output.is_closed()
            || self
                .choice_cancel
                .as_ref()
                .is_some_and(CancellationToken::is_cancelled)
    }

    /// Whether its row at `position` is wanted for the next prompt token's log-probability.
    pub(crate) fn wants_prompt_row(&self, position: usize) -> bool {
        self.prompt_log_probs.is_some() && position + 1 < self.prompt_len
    }

    /// Send the prompt's log-probabilities, once they are all computed; whether the client
    /// is still there.
    pub(crate) fn send_prompt_log_probs(&mut self) -> bool {
        let Some(prompt) = self.prompt_log_probs.take() else {
            return true;
        };
        let chunk = TokenChunk {
            index: self.index,
            prompt_log_probs: Some(prompt.collected),
            ..TokenChunk::default()
        };
        self.output.try_send(Ok(chunk)).is_ok()
    }

    /// Where its blocks are, in order.
    pub(crate) fn table(&self) -> Vec<BlockId> {
        let pinned = self.pinned.iter().map(Held::id);
        pinned.chain(self.private.iter().map(Held::id)).collect()
    }

    /// Give its blocks back to `pool`.
    pub(crate) fn release(&mut self, pool: &mut BlockPool) {
        pool.release(&mut self.pinned);
        let mut private: Vec<PrivateBlock> = self.private.drain(..).collect();
        pool.release(&mut private);
    }
}

/// The tokens that end `request`: its stop tokens, and the model's end of sequence unless it
/// ignores it.
pub(crate) fn stop_tokens(request: &GenerateRequest, eos: Option<u32>) -> HashSet<u32> {
    let eos = eos.filter(|_| !request.stop.ignore_eos);
    request
        .stop
        .stop_token_ids
        .iter()
        .copied()
        .chain(eos)
        .collect()
}

/// Sample the next token of `sequence` and send it; the finish reason if it is done. With an
/// output format, the grammar masks `logits` first and takes the sampled token; the sequence
/// stops once the format is complete.
///
/// # Errors
///
/// When the grammar fails (it allows no token, or refuses the one sampled).
pub(crate) fn advance(
    sequence: &mut Sequence,
    logits: &mut [f32],
    context: usize,
) -> Result<Option<FinishReason>, Error> {
    if let Some(grammar) = &mut sequence.grammar {
        grammar.mask(logits, &sequence.stop)?;
    }
    let token = sequence.sampler.sample(logits);
    if sequence.generated >= sequence.min_tokens && sequence.stop.contains(&token) {
        return Ok(Some(FinishReason::Stop));
    }
    let complete = match &mut sequence.grammar {
        Some(grammar) => grammar.accept(token)?,
        None => false,
    };
    let mut chunk = TokenChunk::token(token);
    chunk.index = sequence.index;
    if let Some(top) = sequence.logprobs {
        chunk.log_probs = Some(vec![token_log_prob(logits, token, top as usize)]);
    }
    if sequence.output.try_send(Ok(chunk)).is_err() {
        return Ok(Some(FinishReason::Cancelled));
    }
    sequence.generated += 1;
    sequence.tokens.push(token);
    sequence.sampler.record(token);
    if complete {
        return Ok(Some(FinishReason::Stop));
    }
    if sequence.generated >= sequence.max_tokens || sequence.tokens.len() >= context {
        return Ok(Some(FinishReason::Length));
    }
    Ok(None)
}

/// The last chunk of a choice; it ends the stream when no other choice of the request runs.
/// Call it once per sequence.
pub(crate) fn finish(sequence: &Sequence, reason: FinishReason) -> TokenChunk {
    if let Some(grammar) = &sequence.grammar {
        // What the output format cost this sequence (target `dynamo_candle::grammar`).
        tracing::debug!(
            target: "dynamo_candle::grammar",
            mask_us = u64::try_from(grammar.spent().as_micros()).unwrap_or(u64::MAX),
            tokens = sequence.generated,
            "output format enforced"
        );
    }
    let usage = Usage {
        prompt_tokens: u32::try_from(sequence.prompt_len).unwrap_or(u32::MAX),
        cached_tokens: u32::try_from(sequence.cached_tokens).unwrap_or(u32::MAX),
        completion_tokens: sequence.generated,
    };
    TokenChunk {
        index: sequence.index,
        more_choices: sequence.live.end_one(),
        ..TokenChunk::finish(reason, Some(usage))
    }
}
