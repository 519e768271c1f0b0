//! A performance profile of the simulated engine, for the planner: what `dynamo-replay
//! profile` measures.

use dynamo_core::BlockHasher;
use dynamo_planner::perf::{DecodePoint, PerfProfile, PrefillPoint};

use crate::Error;
use crate::engine::{EngineConfig, SimRequest, SimWorker};
use crate::timing::TimingModel;

/// The lengths and batch sizes a profile sweeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSweep {
    /// Prompt lengths of the prefill table (one request at a time, nothing cached). Default
    /// 128 to 16,384 by powers of two.
    pub input_tokens: Vec<u64>,
    /// Context lengths of the decode table. Default 512 to 16,384 by powers of two.
    pub context_tokens: Vec<u64>,
    /// Batch sizes of the decode table; a batch whose contexts do not fit in the KV cache (or
    /// past the engine's `max_num_seqs`) is left out, and each context's row also gets the
    /// largest batch that fits. Default 1 to 256 by powers of two.
    pub concurrency: Vec<u32>,
    /// Decode steps timed at each point. Default 16.
    pub decode_steps: u32,
}

impl Default for ProfileSweep {
    fn default() -> Self {
        ProfileSweep {
            input_tokens: (7..=14).map(|p| 1u64 << p).collect(),
            context_tokens: (9..=14).map(|p| 1u64 << p).collect(),
            concurrency: (0..=8).map(|p| 1u32 << p).collect(),
            decode_steps: 16,
        }
    }
}

/// Profile one simulated worker of `engine` stepping as `timing` says, over `sweep`: the
/// prefill table (time to first token and prompt tokens per second by prompt length, one
/// request at a time) and the decode table (time between tokens, KV usage and output tokens
/// per second by context length and batch size, once every prompt of the batch is in).
///
/// ```
/// use dynamo_mocker::{EngineConfig, ProfileSweep, TimingModel, profile_engine};
///
/// let sweep = ProfileSweep {
///     input_tokens: vec![512, 4096],
///     context_tokens: vec![1024],
///     concurrency: vec![1, 8],
///     decode_steps: 4,
/// };
/// let profile = profile_engine(EngineConfig::default(), &TimingModel::default(), &sweep)?;
/// // Longer prompts take longer, and run faster per token.
/// assert!(profile.prefill_ttft_ms(4096.0) > profile.prefill_ttft_ms(512.0));
/// assert!(profile.prefill_tokens_per_s(4096.0) > profile.prefill_tokens_per_s(512.0));
/// // A batch of 8 decodes more tokens per second than one request.
/// assert!(profile.decode_tokens_per_s(8.0, 1024.0) > profile.decode_tokens_per_s(1.0, 1024.0));
/// # Ok::<(), dynamo_mocker::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::Profile`] when the sweep measured nothing usable (an empty table).
pub fn profile_engine(
    engine: EngineConfig,
    timing: &TimingModel,
    sweep: &ProfileSweep,
) -> Result<PerfProfile, Error> {
    let hasher = BlockHasher::new(engine.block_size);
    let block = u64::from(engine.block_size.get());
    let request = |id: u64, tokens: u64, output: u64| {
        // Tokens no other request of the sweep has: nothing is cached.
        let prompt: Vec<u32> = (0..tokens)
            .map(|t| (id * tokens + t) as u32 ^ (id as u32).rotate_left(24))
            .collect();
        SimRequest {
            id,
            prompt_blocks: hasher.hash_blocks(&prompt),
            prompt_tokens: tokens,
            output_tokens: output,
        }
    };
    let mut inputs = sweep.input_tokens.clone();
    inputs.sort_unstable();
    inputs.dedup();
    let mut prefill = Vec::new();
    for &tokens in inputs.iter().filter(|&&t| t > 0) {
        let mut worker = SimWorker::new(engine, timing.clone());
        worker.add_request(request(0, tokens, 2));
        let mut ttft_ms = 0.0;
        while let Some(step) = worker.step() {
            ttft_ms += step.duration_ms;
            if step.first_tokens.contains(&0) {
                break;
            }
        }
        if ttft_ms > 0.0 {
            prefill.push(PrefillPoint {
                input_tokens: tokens,
                ttft_ms,
                tokens_per_s: tokens as f64 / ttft_ms * 1000.0,
            });
        }
    }
    let mut contexts = sweep.context_tokens.clone();
    contexts.sort_unstable();
    contexts.dedup();
    let steps = sweep.decode_steps.max(1);
    // The tokens each request of a batch generates: the prompts go in over several steps (at
    // most the step's token budget each, and one prompt at least), the first ones decode
    // meanwhile, and all must still be running when the timed steps begin.
    let output = |context: u64, batch: u32| {
        let budget = engine.max_num_batched_tokens.max(1);
        let filling = (u64::from(batch) * context).div_ceil(budget) + u64::from(batch);
        filling + u64::from(steps) + 2
    };
    let fits = |context: u64, batch: u32| {
        let blocks_each = (context + output(context, batch)).div_ceil(block);
        batch as usize <= engine.max_num_seqs
            && blocks_each.saturating_mul(u64::from(batch)) <= engine.num_gpu_blocks
    };
    let mut decode = Vec::new();
    for &context in contexts.iter().filter(|&&c| c > 0) {
        let mut batches: Vec<u32> = sweep.concurrency.clone();
        // Each row ends at the largest batch the KV cache holds, as Dynamo's profiler sweeps
        // decode up to the requests the cache can hold: without it a long context's capacity
        // is the largest listed batch that fits, up to half the real one.
        batches.extend(largest_batch(|batch| fits(context, batch)));
        batches.sort_unstable();
        batches.dedup();
        for &batch in batches.iter().filter(|&&b| b > 0) {
            if !fits(context, batch) {
                continue;
            }
            let output = output(context, batch);
            let mut worker = SimWorker::new(engine, timing.clone());
            for id in 0..u64::from(batch) {
                worker.add_request(request(id, context, output));
            }
            // Prefill every prompt, then time the steps that only decode.
            let (mut started, mut filled) = (0, 0u64);
            while started < batch as usize {
                let Some(step) = worker.step() else { break };
                started += step.first_tokens.len();
                filled += 1;
            }
            let (mut elapsed_ms, mut timed) = (0.0, 0u32);
            while timed < steps {
                let Some(step) = worker.step() else { break };
                elapsed_ms += step.duration_ms;
                timed += 1;
            }
            if timed == 0 || elapsed_ms <= 0.0 {
                continue;
            }
            let itl_ms = elapsed_ms / f64::from(timed);
            // The tokens the batch attends to, midway through the timed steps, as a share of
            // the cache's token capacity (what the step-time model reads as KV usage): the
            // prompts, what the batch decoded while the prompts went in (half the filling
            // steps each, on average), and half the timed steps.
            let decoded = filled as f64 / 2.0 + f64::from(timed) / 2.0;
            let attended = f64::from(batch) * (context as f64 + decoded);
            let kv_usage = attended / (engine.num_gpu_blocks.max(1) * block) as f64;
            decode.push(DecodePoint {
                context_tokens: context,
                concurrency: batch,
                kv_usage: kv_usage.clamp(0.0, 1.0),
                itl_ms,
                tokens_per_s: f64::from(batch) / itl_ms * 1000.0,
            });
        }
    }
    let profile = PerfProfile::new(prefill, decode).map_err(|source| Error::Profile { source })?;
    Ok(profile.with_engine("dynamo-mocker"))
}

/// The largest batch for which `fits` holds (at most 2³¹), if one request fits: `fits` holds
/// for every batch up to some size and for none past it.
fn largest_batch(fits: impl Fn(u32) -> bool) -> Option<u32> {
    if !fits(1) {
        return None;
    }
    // Double until a batch does not fit, then halve the gap.
    let mut fitting = 1u32;
    let mut too_large = loop {
        match fitting.checked_mul(2) {
            Some(next) if fits(next) => fitting = next,
            Some(next) => break next,
            None => return Some(fitting),
        }
    };
    while too_large - fitting > 1 {
        let middle = fitting + (too_large - fitting) / 2;
        if fits(middle) {
            fitting = middle;
        } else {
            too_large = middle;
        }
    }
    Some(fitting)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timing::{PolynomialTiming, StepShape, StepTiming};

    /// A decode point is timed on the batch it names: its ITL is the step-time model's at the
    /// KV usage it reports, however many steps the batch's prompts take to go in (256 prompts
    /// of 2,048 tokens take 64 steps at the default token budget).
    #[test]
    fn large_decode_batches_are_timed_on_every_request() {
        let model = PolynomialTiming::default();
        let sweep = ProfileSweep {
            input_tokens: vec![512],
            context_tokens: vec![512, 2048],
            concurrency: vec![1, 64, 256],
            decode_steps: 16,
        };
        let engine = EngineConfig::default();
        let profile = profile_engine(engine, &TimingModel::Polynomial(model), &sweep)
            .expect("the sweep measures points");
        let mut large = 0;
        for point in profile.decode() {
            let shape = StepShape {
                prefill_tokens: 0,
                decode_sequences: point.concurrency,
                kv_usage: point.kv_usage,
            };
            let expected = model.step_ms(&shape);
            let off = (point.itl_ms / expected - 1.0).abs();
            assert!(
                off < 0.03,
                "batch {} context {}: ITL {:.2} ms, the model says {:.2} ms at KV usage {:.3}",
                point.concurrency,
                point.context_tokens,
                point.itl_ms,
                expected,
                point.kv_usage
            );
            large += usize::from(point.concurrency == 256);
        }
        assert_eq!(large, 2, "both contexts fit a batch of 256");
    }

    #[test]
    fn the_largest_batch_is_the_last_that_fits() {
        assert_eq!(largest_batch(|b| b <= 37), Some(37));
        assert_eq!(largest_batch(|b| b <= 64), Some(64));
        assert_eq!(largest_batch(|b| b <= 1), Some(1));
        assert_eq!(largest_batch(|_| false), None);
        assert_eq!(largest_batch(|_| true), Some(1 << 31));
    }

    /// A long context's row goes past the listed batches that fit, to the largest batch the
    /// KV cache holds: one request more would not fit.
    #[test]
    fn each_decode_row_ends_at_the_largest_batch_the_cache_holds() {
        let engine = EngineConfig::default();
        let sweep = ProfileSweep {
            input_tokens: vec![512],
            context_tokens: vec![16_384],
            concurrency: vec![1, 8],
            decode_steps: 4,
        };
        let profile = profile_engine(engine, &TimingModel::default(), &sweep)
            .expect("the sweep measures points");
        let batches: Vec<u32> = profile.decode().iter().map(|p| p.concurrency).collect();
        let largest = *batches.last().expect("a decode row");
        assert_eq!(&batches[..2], &[1, 8]);
        assert!(largest > 8, "batches {batches:?}");
        let usage = profile.decode().last().map_or(0.0, |p| p.kv_usage);
        let per_request = usage / f64::from(largest);
        assert!(
            usage + per_request > 0.95,
            "batch {largest} uses {usage:.3} of the cache; one more would fit"
        );
        // A row whose listed batches fill the cache gains nothing.
        let short = ProfileSweep {
            context_tokens: vec![512],
            concurrency: vec![1, 256],
            ..sweep
        };
        let profile = profile_engine(engine, &TimingModel::default(), &short)
            .expect("the sweep measures points");
        let batches: Vec<u32> = profile.decode().iter().map(|p| p.concurrency).collect();
        assert_eq!(batches, [1, 256], "max_num_seqs is 256");
    }
}
