//! Admission: waiting requests and preempted sequences start running, in queue order, when
//! their blocks can be had without taking those the running sequences' next step needs.

use dynamo_core::{
    BlockHasher, Disaggregation, Error, FinishReason, HashedBlock, RequestId, Submission,
};
use dynamo_kvbm::{PinnedBlock, PrivateBlock};

use super::ModelThread;
use crate::fork::{Fork, Live};
use crate::sequence::{PromptLogProbs, Sequence, finish, stop_tokens};

/// What waits for the model thread: a request that has not started, or a sequence that was
/// preempted and starts again (at the front of the queue).
pub(super) enum Waiting {
    New(Box<Submission>),
    Preempted(Box<Sequence>),
}

impl Waiting {
    /// The sequences it runs once its request forks into its choices.
    fn sequences(&self) -> usize {
        match self {
            Waiting::New(submission) => submission.request.n as usize,
            Waiting::Preempted(sequence) => {
                sequence.fork.as_ref().map_or(1, |fork| fork.n as usize)
            }
        }
    }

    /// Whether its client has gone.
    pub(super) fn is_cancelled(&self) -> bool {
        match self {
            Waiting::New(submission) => {
                submission.cancel.is_cancelled() || submission.chunks.is_closed()
            }
            Waiting::Preempted(sequence) => sequence.is_gone(),
        }
    }
}

/// The blocks a sequence starts with: its cached prefix, pinned, and private blocks for the
/// rest of its tokens.
struct Placed {
    /// The hashes of the full blocks before its last token (whose K and V are always computed,
    /// for its logits).
    hashes: Vec<HashedBlock>,
    pinned: Vec<PinnedBlock>,
    private: Vec<PrivateBlock>,
}

impl ModelThread {
    /// Start what waits while there is room, in queue order.
    pub(super) fn admit(&mut self) {
        while self.running.len() < self.config.max_running {
            let Some(waiting) = self.waiting.pop_front() else {
                return;
            };
            // Room for every choice once the request forks.
            if self.running.len() + waiting.sequences() > self.config.max_running {
                self.waiting.push_front(waiting);
                return;
            }
            let no_room = match waiting {
                Waiting::New(submission) => self.start(submission).map(Waiting::New),
                Waiting::Preempted(sequence) => self.resume(sequence).map(Waiting::Preempted),
            };
            if let Some(waiting) = no_room {
                self.waiting.push_front(waiting);
                return;
            }
        }
    }

    /// Start a new request (or answer it with its error); the submission back when its blocks
    /// cannot be had yet.
    fn start(&mut self, submission: Box<Submission>) -> Option<Box<Submission>> {
        let request = &submission.request;
        let needed = request.tokens.len().div_ceil(self.block_size());
        if needed > self.config.blocks as usize {
            let _ = submission
                .chunks
                .try_send(Err(Error::invalid_request(format!(
                    "the prompt needs {needed} KV blocks; this engine has {}",
                    self.config.blocks
                ))));
            return None;
        }
        let hasher = request.block_hasher(self.config.block_size);
        let prompt: Vec<u32> = request.tokens.to_vec();
        // Log-probabilities of the prompt need all of it computed: no cached prefix then.
        let reuse = request.sampling.prompt_logprobs.is_none();
        let Some(mut placed) = self.place(hasher, &prompt, reuse) else {
            return Some(submission);
        };
        // A continuation's output so far ends its prompt: the grammar reads it first.
        let resumed = &prompt[prompt.len() - (request.resumed_tokens as usize).min(prompt.len())..];
        let grammar = match request.format.as_ref().map(|format| {
            let mut grammar = self.grammars.start(format)?;
            grammar.resume(resumed)?;
            Ok::<_, Error>(grammar)
        }) {
            None => None,
            Some(Ok(grammar)) => Some(grammar),
            Some(Err(error)) => {
                self.pool.release(&mut placed.pinned);
                self.pool.release(&mut placed.private);
                let _ = submission.chunks.try_send(Err(error));
                return None;
            }
        };
        let cached = self.fill(&request.id, &mut placed);
        let block_size = self.block_size();
        let Submission {
            request,
            chunks: output,
            cancel,
        } = *submission;
        let fork = Fork::of(&request, resumed);
        let sampler = crate::fork::sampler(&request.sampling, 0, &prompt, resumed.len());
        self.running.push(Sequence {
            request: request.id.clone(),
            index: 0,
            fork,
            live: Live::one(),
            prompt_len: prompt.len(),
            computed: cached * block_size,
            cached_tokens: cached * block_size,
            tokens: prompt,
            pinned: placed.pinned,
            private: placed.private.into(),
            hands_over: request.disaggregation == Disaggregation::Prefill,
            hashes: placed.hashes,
            hasher,
            generated: 0,
            max_tokens: request.limits.max_tokens.unwrap_or(u32::MAX),
            min_tokens: request.limits.min_tokens.unwrap_or(0),
            stop: stop_tokens(&request, self.weights.config().eos_token_id),
            sampler,
            logprobs: request.sampling.logprobs,
            prompt_log_probs: request.sampling.prompt_logprobs.map(|top| PromptLogProbs {
                top,
                collected: Vec::new(),
            }),
            grammar,
            output,
            cancel,
            choice_cancel: request.choice_cancellation(0).cloned(),
        });
        None
    }

    /// Start a preempted sequence again: it computes its tokens once more, after what the
    /// cache and the lower tiers still hold. The sequence back when its blocks cannot be had
    /// yet.
    fn resume(&mut self, mut sequence: Box<Sequence>) -> Option<Box<Sequence>> {
        let reuse = sequence.prompt_log_probs.is_none();
        let Some(mut placed) = self.place(sequence.hasher, &sequence.tokens, reuse) else {
            return Some(sequence);
        };
        let cached = self.fill(&sequence.request, &mut placed);
        sequence.computed = cached * self.block_size();
        sequence.pinned = placed.pinned;
        sequence.private = placed.private.into();
        sequence.hashes = placed.hashes;
        self.running.push(*sequence);
        None
    }

    /// The blocks to compute `tokens` in: the cached prefix of their full blocks (with
    /// `reuse`), pinned, and private blocks for the rest, leaving the blocks the running
    /// sequences' next step needs. `None`, holding nothing, when there are not enough.
    fn place(&mut self, hasher: BlockHasher, tokens: &[u32], reuse: bool) -> Option<Placed> {
        let block_size = self.block_size();
        let mut hashes = hasher.hash_blocks(tokens);
        // The last token is always computed, for its logits.
        hashes.truncate(if reuse {
            (tokens.len() - 1) / block_size
        } else {
            0
        });
        let needed = tokens.len().div_ceil(block_size);
        let mut found = Vec::new();
        self.pool.cached_prefix(&hashes, &mut found);
        let mut pinned: Vec<PinnedBlock> = found
            .into_iter()
            .filter_map(|id| self.pool.pin(id))
            .collect();
        let wanted = needed - pinned.len();
        let mut private = Vec::new();
        let reserved = self.blocks_for_next_step();
        if self.pool.obtainable() < wanted + reserved || !self.pool.take(wanted, &mut private) {
            self.pool.release(&mut pinned);
            return None;
        }
        Some(Placed {
            hashes,
            pinned,
            private,
        })
    }

    /// The blocks the running sequences' next step opens: a decoding sequence whose last block
    /// is full needs one more (a prompt's blocks are all taken when it starts).
    fn blocks_for_next_step(&self) -> usize {
        let block_size = self.block_size();
        self.running
            .iter()
            .map(|sequence| {
                let held = sequence.pinned.len() + sequence.private.len();
                sequence
                    .tokens
                    .len()
                    .div_ceil(block_size)
                    .saturating_sub(held)
            })
            .sum()
    }

    /// Onboard into `placed` what the lower tiers and a hand-over hold after its cached prefix,
    /// writing out first what taking its blocks evicted; the blocks whose K and V are then in
    /// the cache (`placed.hashes` keeps theirs).
    fn fill(&mut self, request: &RequestId, placed: &mut Placed) -> usize {
        self.offload_evicted();
        let cached = placed.pinned.len();
        let onboarded = self.onboard(
            request,
            cached,
            &placed.hashes,
            &mut placed.pinned,
            &mut placed.private,
        );
        placed.hashes.truncate(cached + onboarded);
        cached + onboarded
    }
}

/// Send a preempted sequence whose client went away its last chunk.
pub(super) fn end_cancelled(waiting: Waiting) {
    if let Waiting::Preempted(sequence) = waiting {
        let _ = sequence
            .output
            .try_send(Ok(finish(&sequence, FinishReason::Cancelled)));
    }
}
