//! Several choices of one request: the prompt is computed once, then the sequence forks into
//! `n` sequences that share the prompt's full blocks and each get a copy of its partly filled
//! last block, a sampler of their own (seeded `seed + index` when the request has a seed) and,
//! with an output format, a grammar of their own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use dynamo_core::{Disaggregation, Error, GenerateRequest, OutputFormat, SamplingOptions};
use dynamo_kvbm::{BlockPool, Held, PinnedBlock, PrivateBlock};
use tokio_util::sync::CancellationToken;

use crate::forward::KvStore;
use crate::grammar::Grammars;
use crate::sampler::Sampler;
use crate::sequence::Sequence;

/// What a request's first choice keeps until its prompt is computed, to make the others.
pub(crate) struct Fork {
    /// How many choices in all.
    pub(crate) n: u32,
    pub(crate) sampling: SamplingOptions,
    pub(crate) format: Option<OutputFormat>,
    /// The continuation's output so far, which a fresh grammar reads first.
    pub(crate) resumed: Vec<u32>,
    /// A token per choice that stops it alone, where the frontend made them.
    pub(crate) choice_cancels: Vec<CancellationToken>,
}

impl Fork {
    /// What the first choice of `request` keeps, when it asks for several; `resumed` is its
    /// output so far (a continuation's).
    pub(crate) fn of(request: &GenerateRequest, resumed: &[u32]) -> Option<Box<Fork>> {
        (request.n > 1).then(|| {
            Box::new(Fork {
                n: request.n,
                sampling: request.sampling.clone(),
                format: request.format.clone(),
                resumed: resumed.to_vec(),
                choice_cancels: (0..request.n)
                    .map_while(|index| request.choice_cancellation(index).cloned())
                    .collect(),
            })
        })
    }
}

/// How many choices of one request are still running; shared by its sequences, so that only
/// the last one to finish ends the stream.
#[derive(Debug, Clone)]
pub(crate) struct Live(Arc<AtomicU32>);

impl Live {
    /// One choice running.
    pub(crate) fn one() -> Self {
        Live(Arc::new(AtomicU32::new(1)))
    }

    fn add(&self, more: u32) {
        self.0.fetch_add(more, Ordering::AcqRel);
    }

    /// A choice ended; whether others still run.
    pub(crate) fn end_one(&self) -> bool {
        self.0.fetch_sub(1, Ordering::AcqRel) > 1
    }
}

/// The sampler of choice `index`: the request's options with the seed moved by the index. Its
/// penalties count `tokens`, the last `generated` of them output (a continuation's).
pub(crate) fn sampler(
    sampling: &SamplingOptions,
    index: u32,
    tokens: &[u32],
    generated: usize,
) -> Sampler {
    let options = SamplingOptions {
        seed: sampling
            .seed
            .map(|seed| seed.wrapping_add(u64::from(index))),
        ..sampling.clone()
    };
    Sampler::new(&options, tokens, generated)
}

/// The other `n - 1` choices of `first`, whose prompt has just been computed. They pin the
/// same full blocks and copy the blocks being filled into fresh ones.
///
/// # Errors
///
/// [`Error::Overloaded`] when the pool has no room for the copies (nothing is taken then), or
/// the grammar's error when an output format cannot start.
pub(crate) fn fork(
    first: &mut Sequence,
    pool: &mut BlockPool,
    store: &mut KvStore,
    grammars: &mut Grammars,
) -> Result<Vec<Sequence>, Error> {
    let Some(fork) = first.fork.take() else {
        return Ok(Vec::new());
    };
    let others = fork.n.saturating_sub(1);
    let partial = first.private.len();
    let mut copies = Vec::new();
    if !pool.take(partial * others as usize, &mut copies) {
        return Err(Error::overloaded(
            "the KV cache has no room for the request's choices; retry with a smaller n",
        ));
    }
    let mut grammars_made = Vec::with_capacity(others as usize);
    for _ in 0..others {
        match fork.format.as_ref().map(|format| {
            let mut grammar = grammars.start(format)?;
            grammar.resume(&fork.resumed)?;
            Ok::<_, Error>(grammar)
        }) {
            Some(Err(error)) => {
                pool.release(&mut copies);
                return Err(error);
            }
            made => grammars_made.push(made.and_then(Result::ok)),
        }
    }
    let mut bytes = vec![0; store.block_bytes()];
    let mut forks = Vec::with_capacity(others as usize);
    for (index, grammar) in (1..=others).zip(grammars_made) {
        let pinned: Vec<PinnedBlock> = first
            .pinned
            .iter()
            .filter_map(|block| pool.pin(block.id()))
            .collect();
        let private: Vec<PrivateBlock> = copies.drain(..partial).collect();
        for (from, to) in first.private.iter().zip(&private) {
            store.read_block(from.id(), &mut bytes);
            store.write_block(to.id(), &bytes);
        }
        forks.push(Sequence {
            request: first.request.clone(),
            index,
            tokens: first.tokens.clone(),
            pinned,
            private: private.into(),
            hashes: first.hashes.clone(),
            hasher: first.hasher,
            stop: first.stop.clone(),
            // The first choice has sampled nothing yet: its tokens are the prompt.
            sampler: sampler(&fork.sampling, index, &first.tokens, fork.resumed.len()),
            grammar,
            output: first.output.clone(),
            cancel: first.cancel.clone(),
            choice_cancel: fork.choice_cancels.get(index as usize).cloned(),
            fork: None,
            live: first.live.clone(),
            prompt_log_probs: None,
            ..*first
        });
    }
    first.live.add(others);
    Ok(forks)
}

/// Refuse a request for choices the engine cannot run: more than it runs at once, or several
/// in one phase of a disaggregated request (its first token comes from another worker).
pub(crate) fn check_choices(request: &GenerateRequest, max_running: usize) -> Result<(), Error> {
    if request.n > 1 && request.disaggregation != Disaggregation::None {
        return Err(Error::invalid_request(
            "n > 1 is served by whole requests only, not by a disaggregated phase",
        ));
    }
    if request.n as usize > max_running {
        return Err(Error::invalid_request(format!(
            "n = {} is more than the {max_running} sequences this engine runs at once",
            request.n
        )));
    }
    Ok(())
}
