//! [`ExpectedTtft`](super::ExpectedTtft)'s cost of one request on each worker, computed for
//! all the workers of a decision together.
//!
//! Most workers of a decision hold none of the prompt (no cached or in-flight prefix), so they
//! all compute the whole prompt: its uncached tokens and their prefill time are computed once,
//! and only their loads differ. Their costs are computed in one pass over their loads copied
//! side by side, without a branch, which the compiler makes vector instructions of; the few
//! that hold some of the prompt are gathered and computed in a second such pass. Every cost is
//! the same, bit for bit, as the formula computed worker by worker: the same operations on the
//! same values, in the same order (a test holds them to it).

use super::expected_ttft::{ExpectedTtftConfig, PrefillTimeModel};
use super::{RouteContext, WorkerState};
use crate::index::TierOverlap;

/// Workers whose costs are computed together (their loads copied side by side on the stack).
pub(super) const BATCH: usize = 64;

/// The cost of one request on any worker.
pub(super) struct RequestCosts<'a> {
    config: &'a ExpectedTtftConfig,
    request: &'a RouteContext<'a>,
    prefill: Prepared<'a>,
    /// The prompt's full blocks.
    blocks: u64,
    /// The most a worker's stalled requests are charged.
    stall_cap: f64,
    /// Whether the workers' KV capacity is known, and what it is.
    has_capacity: bool,
    capacity: f64,
    /// What a worker holding none of the prompt would compute.
    bare: Work,
}

/// The prompt tokens a worker would compute, and their prefill time.
#[derive(Debug, Clone, Copy)]
struct Work {
    uncached: u64,
    ms: f64,
}

/// What a cost reads of one worker.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    cached: TierOverlap,
    in_flight: u32,
    requests: u32,
    prefill_tokens: u64,
    decode_blocks: u64,
}

impl Seen {
    #[inline(always)]
    fn of(worker: &WorkerState) -> Self {
        Seen {
            cached: worker.cached,
            in_flight: worker.in_flight,
            requests: worker.load.active_requests,
            prefill_tokens: worker.load.active_prefill_tokens,
            decode_blocks: worker.load.active_decode_blocks,
        }
    }
}

/// Workers holding some of the prompt whose costs are computed together: a decision usually
/// has fewer, and their columns are set to zero first.
const GROUP: usize = 16;

/// A group of workers as columns.
struct Columns {
    device: [u32; GROUP],
    host: [u32; GROUP],
    disk: [u32; GROUP],
    remote: [u32; GROUP],
    in_flight: [u32; GROUP],
    requests: [u32; GROUP],
    prefill_tokens: [u64; GROUP],
    decode_blocks: [u64; GROUP],
}

impl Columns {
    fn new() -> Self {
        Columns {
            device: [0; GROUP],
            host: [0; GROUP],
            disk: [0; GROUP],
            remote: [0; GROUP],
            in_flight: [0; GROUP],
            requests: [0; GROUP],
            prefill_tokens: [0; GROUP],
            decode_blocks: [0; GROUP],
        }
    }

    #[inline(always)]
    fn set(&mut self, i: usize, seen: Seen) {
        self.device[i] = seen.cached.device;
        self.host[i] = seen.cached.host;
        self.disk[i] = seen.cached.disk;
        self.remote[i] = seen.cached.remote;
        self.in_flight[i] = seen.in_flight;
        self.requests[i] = seen.requests;
        self.prefill_tokens[i] = seen.prefill_tokens;
        self.decode_blocks[i] = seen.decode_blocks;
    }

    #[inline(always)]
    fn get(&self, i: usize) -> Seen {
        Seen {
            cached: TierOverlap {
                device: self.device[i],
                host: self.host[i],
                disk: self.disk[i],
                remote: self.remote[i],
            },
            in_flight: self.in_flight[i],
            requests: self.requests[i],
            prefill_tokens: self.prefill_tokens[i],
            decode_blocks: self.decode_blocks[i],
        }
    }
}

impl<'a> RequestCosts<'a> {
    pub(super) fn new(config: &'a ExpectedTtftConfig, request: &'a RouteContext<'a>) -> Self {
        let prefill = Prepared::new(&config.prefill);
        let uncached = uncached_tokens(config, request, &TierOverlap::default(), 0);
        RequestCosts {
            config,
            request,
            blocks: request.blocks.len() as u64,
            stall_cap: stall_cap(config, request),
            has_capacity: config.kv_capacity_blocks.is_some(),
            capacity: config.kv_capacity_blocks.unwrap_or(0) as f64,
            bare: Work {
                uncached,
                ms: prefill.time_ms(uncached),
            },
            prefill,
        }
    }

    /// The expected time to first token on `worker`, in ms.
    pub(super) fn ttft_ms(&self, worker: &WorkerState) -> f64 {
        let uncached = uncached_tokens(self.config, self.request, &worker.cached, worker.in_flight);
        self.prefill
            .time_ms(worker.load.active_prefill_tokens + uncached)
    }

    /// The cost of the request on `worker`, in ms (the formula of
    /// [`ExpectedTtft`](super::ExpectedTtft)).
    pub(super) fn cost(&self, worker: &WorkerState) -> f64 {
        let split = |tokens| self.prefill.model.chunks(tokens, self.prefill.chunk);
        let seen = Seen::of(worker);
        self.cost_with(split, self.work(split, &seen), seen)
    }

    /// What a worker would compute.
    #[inline(always)]
    fn work(&self, split: impl Fn(u64) -> (u64, u64), seen: &Seen) -> Work {
        let uncached = uncached_tokens(self.config, self.request, &seen.cached, seen.in_flight);
        Work {
            uncached,
            ms: self.prefill.time_with(uncached, split),
        }
    }

    /// The costs of the request on `workers` into `costs` (as long), in their order.
    pub(super) fn fill(&self, workers: &[WorkerState], costs: &mut [f64]) {
        for (workers, costs) in workers.chunks(BATCH).zip(costs.chunks_mut(BATCH)) {
            if self.prefill.shift < 64 {
                let (shift, mask) = (self.prefill.shift, self.prefill.chunk - 1);
                self.fill_batch(|tokens| (tokens >> shift, tokens & mask), workers, costs);
            } else {
                let chunk = self.prefill.chunk;
                self.fill_batch(|tokens| (tokens / chunk, tokens % chunk), workers, costs);
            }
        }
    }

    /// [`fill`](Self::fill) for at most [`BATCH`] workers; `split` cuts tokens into whole
    /// chunks and a remainder.
    #[inline(always)]
    fn fill_batch(
        &self,
        split: impl Fn(u64) -> (u64, u64) + Copy,
        workers: &[WorkerState],
        costs: &mut [f64],
    ) {
        let n = workers.len().min(costs.len()).min(BATCH);
        let costs = &mut costs[..n];
        // Every worker's load side by side, and the places of those that hold some of the
        // prompt.
        let mut requests = [0u32; BATCH];
        let mut prefill_tokens = [0u64; BATCH];
        let mut decode_blocks = [0u64; BATCH];
        let mut holding = [0u8; BATCH];
        let mut holders = 0;
        for (i, worker) in workers.iter().take(n).enumerate() {
            requests[i] = worker.load.active_requests;
            prefill_tokens[i] = worker.load.active_prefill_tokens;
            decode_blocks[i] = worker.load.active_decode_blocks;
            // Without a branch: written at the next place, which moves on if it holds some.
            holding[holders % BATCH] = i as u8;
            let cached = &worker.cached;
            let some = worker.in_flight | cached.device | cached.host | cached.disk | cached.remote;
            holders += usize::from(some != 0);
        }
        // Every worker as if it held none of the prompt.
        for (i, cost) in costs.iter_mut().enumerate() {
            let seen = Seen {
                cached: TierOverlap::default(),
                in_flight: 0,
                requests: requests[i],
                prefill_tokens: prefill_tokens[i],
                decode_blocks: decode_blocks[i],
            };
            *cost = self.cost_with(split, self.bare, seen);
        }
        // Then those that do, side by side.
        for group in holding[..holders.min(BATCH)].chunks(GROUP) {
            let mut some = Columns::new();
            for (j, &i) in group.iter().enumerate() {
                if let Some(worker) = workers.get(usize::from(i)) {
                    some.set(j, Seen::of(worker));
                }
            }
            let mut theirs = [0.0; GROUP];
            for (j, cost) in theirs.iter_mut().take(group.len()).enumerate() {
                let seen = some.get(j);
                *cost = self.cost_with(split, self.work(split, &seen), seen);
            }
            for (&i, &cost) in group.iter().zip(&theirs) {
                if let Some(slot) = costs.get_mut(usize::from(i)) {
                    *slot = cost;
                }
            }
        }
    }

    /// The cost on a worker that would compute `work` (the formula of
    /// [`ExpectedTtft`](super::ExpectedTtft)), without a branch.
    #[inline(always)]
    fn cost_with(&self, split: impl Fn(u64) -> (u64, u64), work: Work, seen: Seen) -> f64 {
        let config = self.config;
        let ttft = self
            .prefill
            .time_with(seen.prefill_tokens + work.uncached, split);
        // `WorkerState::decode_blocks_with`.
        let shared = u64::from(seen.in_flight).min(self.blocks);
        let held = (seen.decode_blocks + (self.blocks - shared) + 1) as f64;
        let stalled = f64::from(seen.requests);
        let stall = (config.stall_weight * stalled * work.ms).min(self.stall_cap);
        let overflow = (held - self.capacity).max(0.0);
        let overflow = if self.has_capacity { overflow } else { 0.0 };
        ttft + config.compute_weight * work.ms
            + stall
            + config.decode_ms_per_block * held
            + config.overflow_ms_per_block * overflow
    }
}

/// The prompt tokens a worker that caches `cached` and whose active requests hold `in_flight`
/// leading blocks would compute for `request`.
#[inline(always)]
fn uncached_tokens(
    config: &ExpectedTtftConfig,
    request: &RouteContext<'_>,
    cached: &TierOverlap,
    in_flight: u32,
) -> u64 {
    let cached = config.credits.credit(cached).max(f64::from(in_flight));
    let cached_tokens = cached * f64::from(request.block_size.get());
    (request.prompt_tokens as f64 - cached_tokens).max(0.0) as u64
}

/// The most the stalls of `request`'s prefill are charged on any worker: what computing its
/// whole prompt costs on an idle worker (its TTFT and its work). Past that, sending it to a
/// worker without its prefix is cheaper anyway, so a larger charge would only reorder busy
/// workers, which is the queue's part; and on a busy pool every worker reaches the cap, so
/// the queue decides, instead of long prompts gathering on the workers with the fewest
/// requests.
fn stall_cap(config: &ExpectedTtftConfig, request: &RouteContext<'_>) -> f64 {
    (1.0 + config.compute_weight) * config.prefill.time_ms(request.prompt_tokens)
}

/// A prefill time model with the time of a whole chunk computed once: the same sums as
/// [`PrefillTimeModel::time_ms`].
struct Prepared<'a> {
    model: &'a PrefillTimeModel,
    chunk: u64,
    /// The time of a whole chunk.
    chunk_ms: f64,
    /// `log2(chunk)` when the chunk is a power of two, else 64.
    shift: u32,
}

impl<'a> Prepared<'a> {
    fn new(model: &'a PrefillTimeModel) -> Self {
        let chunk = model.chunk_tokens.max(1);
        Prepared {
            model,
            chunk,
            chunk_ms: model.step_ms(chunk),
            shift: if chunk.is_power_of_two() {
                chunk.trailing_zeros()
            } else {
                64
            },
        }
    }

    fn time_ms(&self, tokens: u64) -> f64 {
        self.time_with(tokens, |tokens| self.model.chunks(tokens, self.chunk))
    }

    /// The time of `tokens`, `split` into whole chunks and a remainder: both sides of each
    /// branch of [`PrefillTimeModel::time_ms`] computed and one selected.
    #[inline(always)]
    fn time_with(&self, tokens: u64, split: impl Fn(u64) -> (u64, u64)) -> f64 {
        let (full, rest) = split(tokens);
        let rest_ms = self.model.step_ms(rest);
        let rest_ms = if rest > 0 { rest_ms } else { 0.0 };
        let whole = full as f64 * self.chunk_ms + rest_ms;
        if tokens < self.chunk { rest_ms } else { whole }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prepared_model_gives_the_models_times_bit_for_bit() {
        for chunk_tokens in [8192, 1000, 1, 0] {
            let model = PrefillTimeModel {
                chunk_tokens,
                ..PrefillTimeModel::default()
            };
            let prepared = Prepared::new(&model);
            let edges = [0, 1, 999, 1000, 1001, 8191, 8192, 8193, 16_384, 100_003];
            for tokens in (0..40_000).step_by(37).chain(edges) {
                let expected = model.time_ms(tokens).to_bits();
                let context = format!("{tokens} tokens, chunks of {chunk_tokens}");
                assert_eq!(prepared.time_ms(tokens).to_bits(), expected, "{context}");
            }
        }
    }

    /// The cost as the policy's formula says, worker by worker, with the model's own times.
    fn by_formula(config: &ExpectedTtftConfig, request: &RouteContext<'_>, w: &WorkerState) -> f64 {
        let cached = config.credits.credit(&w.cached).max(f64::from(w.in_flight));
        let block = f64::from(request.block_size.get());
        let uncached = (request.prompt_tokens as f64 - cached * block).max(0.0) as u64;
        let work = config.prefill.time_ms(uncached);
        let ttft = config
            .prefill
            .time_ms(w.load.active_prefill_tokens + uncached);
        let cap = (1.0 + config.compute_weight) * config.prefill.time_ms(request.prompt_tokens);
        let stall = (config.stall_weight * f64::from(w.load.active_requests) * work).min(cap);
        let held = w.decode_blocks_with(request) as f64;
        let overflow = config
            .kv_capacity_blocks
            .map_or(0.0, |capacity| (held - capacity as f64).max(0.0));
        ttft + config.compute_weight * work
            + stall
            + config.decode_ms_per_block * held
            + config.overflow_ms_per_block * overflow
    }

    #[test]
    fn costs_are_the_formulas_bit_for_bit_with_or_without_a_prefix() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |below: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % below
        };
        let blocks: Vec<_> = (0..40).map(dynamo_core::SequenceHash).collect();
        let configs = [
            ExpectedTtftConfig::default(),
            ExpectedTtftConfig {
                kv_capacity_blocks: Some(300),
                compute_weight: 0.7,
                prefill: PrefillTimeModel {
                    chunk_tokens: 1000,
                    ..PrefillTimeModel::default()
                },
                ..ExpectedTtftConfig::default()
            },
        ];
        for config in &configs {
            for _ in 0..300 {
                let len = next(41) as usize;
                let request = RouteContext {
                    blocks: &blocks[..len],
                    prompt_tokens: len as u64 * 64 + next(64),
                    block_size: dynamo_core::BlockSize::new(64).expect("non-zero"),
                    expected_output_tokens: None,
                };
                // Batches of workers, whole and cut, most holding none of the prompt.
                let workers: Vec<WorkerState> = (0..next(150))
                    .map(|id| {
                        let mut worker = WorkerState {
                            worker: dynamo_core::WorkerId::new(id),
                            cached: TierOverlap::default(),
                            in_flight: 0,
                            load: crate::WorkerLoad {
                                active_requests: next(50) as u32,
                                active_prefill_tokens: next(3) * next(30_000),
                                active_decode_blocks: next(600),
                                expected_output_tokens: 0,
                            },
                        };
                        if next(4) == 0 {
                            worker.in_flight = next(45) as u32;
                            worker.cached.device = next(45) as u32;
                            worker.cached.host = next(3) as u32;
                            worker.cached.disk = next(2) as u32;
                        }
                        worker
                    })
                    .collect();
                let costs = RequestCosts::new(config, &request);
                let mut all = vec![f64::NAN; workers.len()];
                costs.fill(&workers, &mut all);
                for (worker, cost) in workers.iter().zip(all) {
                    let expected = by_formula(config, &request, worker);
                    assert_eq!(cost.to_bits(), expected.to_bits(), "{worker:?}");
                    assert_eq!(
                        costs.cost(worker).to_bits(),
                        expected.to_bits(),
                        "{worker:?}"
                    );
                }
            }
        }
    }
}
