//! [`ExpectedTtft`](super::ExpectedTtft)'s cost of one request on each worker, computed for
//! all the workers of a decision together.
//!
//! Most workers of a decision hold none of the prompt (no cached or in-flight prefix), so they
//! all compute the whole prompt: its uncached tokens and their prefill time are computed once,
//! and only their loads differ ([`batch`] costs them side by side, then the others). Every cost
//! is the same, bit for bit, as the formula computed worker by worker: the same operations on
//! the same values, in the same order (a test holds them to it).

use super::batch::{BATCH, Loads, Reported, Seen};
use super::expected_ttft::{ExpectedTtftConfig, PrefillTimeModel};
use super::{RouteContext, WorkerState};
use crate::index::TierOverlap;

/// The cost of one request on any worker.
pub(super) struct RequestCosts<'a> {
    config: &'a ExpectedTtftConfig,
    request: &'a RouteContext<'a>,
    prefill: Prepared<'a>,
    /// The prompt's full blocks.
    blocks: u64,
    /// The most a worker's stalled requests are charged.
    stall_cap: f64,
    /// The memory terms' values for a worker whose own KV capacity is not known.
    configured: Memory,
    /// Twice the prompt's full blocks (at least 1): a capacity over it is the exponent's base.
    twice_blocks: f64,
    /// What a worker holding none of the prompt would compute.
    bare: Work,
}

/// What the memory terms read of a worker's KV capacity, for one request.
#[derive(Debug, Clone, Copy)]
struct Memory {
    /// Whether the capacity is known, and what it is (0 when it is not).
    has_capacity: bool,
    capacity: f64,
    /// `1 / capacity`, or 0 when it is not known (no memory wait is charged then).
    per_block: f64,
    /// The power of a worker's memory share that is the chance this request waits for memory.
    exponent: u32,
}

/// Where a batch's memory terms take a worker's capacity from (the forms of
/// [`RequestCosts::cost_with`], each the formula's exact value in its case).
mod memory {
    /// No capacity is known, neither reported nor configured: both terms are zero.
    pub(super) const NONE: u8 = 0;
    /// One capacity for every worker of the batch (the configured one, as none reported any,
    /// or the one they all reported): its values are computed once.
    pub(super) const FIXED: u8 = 1;
    /// Each worker's own, else the configured one.
    pub(super) const OWN: u8 = 2;
}

/// The prompt tokens a worker would compute, and their prefill time.
#[derive(Debug, Clone, Copy)]
struct Work {
    uncached: u64,
    ms: f64,
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
            configured: Memory {
                has_capacity: config.kv_capacity_blocks.is_some(),
                capacity: config.kv_capacity_blocks.unwrap_or(0) as f64,
                per_block: config
                    .kv_capacity_blocks
                    .map_or(0.0, |capacity| 1.0 / capacity.max(1) as f64),
                exponent: memory_exponent(config, request),
            },
            twice_blocks: twice_blocks(request),
            bare: Work {
                uncached,
                ms: prefill.time_ms(uncached),
            },
            prefill,
        }
    }

    /// The memory terms' values for a worker that reported a capacity of `blocks` (not 0):
    /// what [`cost_with`](Self::cost_with) computes for each such worker.
    fn reported(&self, blocks: u64) -> Memory {
        let capacity = blocks as f64;
        Memory {
            has_capacity: true,
            capacity,
            per_block: 1.0 / capacity.max(1.0),
            exponent: exponent_of(capacity, self.twice_blocks),
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
        let work = self.work(split, &seen);
        self.cost_with::<{ memory::OWN }, EXPONENT_BITS>(split, work, seen, &self.configured)
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
        if self.prefill.shift < 64 {
            let (shift, mask) = (self.prefill.shift, self.prefill.chunk - 1);
            self.fill_with(|tokens| (tokens >> shift, tokens & mask), workers, costs);
        } else {
            let chunk = self.prefill.chunk;
            self.fill_with(|tokens| (tokens / chunk, tokens % chunk), workers, costs);
        }
    }

    /// [`fill`](Self::fill), `split` cutting tokens into whole chunks and a remainder: a batch
    /// at a time, in the cheapest form of the memory terms that the batch's capacities allow
    /// (the same costs in every form).
    #[inline(always)]
    fn fill_with(
        &self,
        split: impl Fn(u64) -> (u64, u64) + Copy,
        workers: &[WorkerState],
        costs: &mut [f64],
    ) {
        for (workers, costs) in workers.chunks(BATCH).zip(costs.chunks_mut(BATCH)) {
            let loads = Loads::of(workers);
            match loads.reported() {
                Reported::Nothing if !self.configured.has_capacity => self
                    .fill_batch::<{ memory::NONE }, EXPONENT_BITS>(
                        split,
                        &loads,
                        workers,
                        costs,
                        self.configured,
                    ),
                Reported::Nothing => {
                    self.fill_fixed(split, &loads, workers, costs, self.configured);
                }
                Reported::Same(blocks) => {
                    self.fill_fixed(split, &loads, workers, costs, self.reported(blocks));
                }
                Reported::Mixed => self.fill_batch::<{ memory::OWN }, EXPONENT_BITS>(
                    split,
                    &loads,
                    workers,
                    costs,
                    self.configured,
                ),
            }
        }
    }

    /// One batch's costs with one capacity for every worker (`fixed`): the memory wait's power
    /// takes only the squarings up to its exponent's highest bit (rounded up to 4, 6, 8 or 12),
    /// as the steps past it would multiply the result by exactly 1.
    #[inline(always)]
    fn fill_fixed(
        &self,
        split: impl Fn(u64) -> (u64, u64) + Copy,
        loads: &Loads,
        workers: &[WorkerState],
        costs: &mut [f64],
        fixed: Memory,
    ) {
        const FIXED: u8 = memory::FIXED;
        match fixed.exponent {
            0..16 => self.fill_batch::<FIXED, 4>(split, loads, workers, costs, fixed),
            16..64 => self.fill_batch::<FIXED, 6>(split, loads, workers, costs, fixed),
            64..256 => self.fill_batch::<FIXED, 8>(split, loads, workers, costs, fixed),
            _ => self.fill_batch::<FIXED, EXPONENT_BITS>(split, loads, workers, costs, fixed),
        }
    }

    /// One batch's costs, the memory terms in form `MEMORY` (`fixed`: the values of
    /// [`memory::FIXED`]), the memory wait's power in `STEPS` squarings (see [`power`]).
    #[inline(always)]
    fn fill_batch<const MEMORY: u8, const STEPS: u32>(
        &self,
        split: impl Fn(u64) -> (u64, u64) + Copy,
        loads: &Loads,
        workers: &[WorkerState],
        costs: &mut [f64],
        fixed: Memory,
    ) {
        // A worker holding none of the prompt computes what any other such worker does.
        loads.each_bare(costs, |seen| {
            self.cost_with::<MEMORY, STEPS>(split, self.bare, seen, &fixed)
        });
        loads.each_holding(workers, costs, |seen| {
            self.cost_with::<MEMORY, STEPS>(split, self.work(split, &seen), seen, &fixed)
        });
    }

    /// The cost on a worker that would compute `work` (the formula of
    /// [`ExpectedTtft`](super::ExpectedTtft)), without a branch. `MEMORY` says where the
    /// memory terms take the worker's capacity from ([`memory`]); `fixed` is the capacity's
    /// values for [`memory::FIXED`], and the configured ones for [`memory::OWN`]. The memory
    /// wait's power takes `STEPS` squarings: the exponent must be below `2^STEPS`.
    #[inline(always)]
    fn cost_with<const MEMORY: u8, const STEPS: u32>(
        &self,
        split: impl Fn(u64) -> (u64, u64),
        work: Work,
        seen: Seen,
        fixed: &Memory,
    ) -> f64 {
        let config = self.config;
        let ttft = self
            .prefill
            .time_with(seen.prefill_tokens + work.uncached, split);
        let held = seen.decode_blocks_with(self.blocks) as f64;
        let stalled = f64::from(seen.requests);
        let stall = (config.stall_weight * stalled * work.ms).min(self.stall_cap);
        let (overflow, waits) = match MEMORY {
            // With no capacity the overflow is 0, and so is the share (`held` times 0), whose
            // power (the exponent is then 1) the wait is: both terms are exactly 0.
            memory::NONE => (0.0, 0.0),
            memory::FIXED => fixed.terms::<STEPS>(held),
            _ => {
                // The worker's own capacity where it reported one, else the configured one.
                let own = seen.capacity;
                let known = own != 0;
                let own_capacity = own as f64;
                let per_block = 1.0 / own_capacity.max(1.0);
                let exponent = exponent_of(own_capacity, self.twice_blocks);
                Memory {
                    has_capacity: known | fixed.has_capacity,
                    capacity: if known { own_capacity } else { fixed.capacity },
                    per_block: if known { per_block } else { fixed.per_block },
                    exponent: if known { exponent } else { fixed.exponent },
                }
                .terms::<EXPONENT_BITS>(held)
            }
        };
        ttft + config.compute_weight * work.ms
            + stall
            + config.decode_ms_per_block * held
            + config.overflow_ms_per_block * overflow
            + config.memory_wait_ms * waits
    }
}

impl Memory {
    /// The blocks past the capacity (0 when it is not known) and the chance of waiting for
    /// memory, for a worker whose active requests would hold `held` blocks; the exponent must be
    /// below `2^STEPS`.
    #[inline(always)]
    fn terms<const STEPS: u32>(&self, held: f64) -> (f64, f64) {
        let overflow = (held - self.capacity).max(0.0);
        let overflow = if self.has_capacity { overflow } else { 0.0 };
        let share = (held * self.per_block).min(1.0);
        (overflow, power_in::<STEPS>(share, self.exponent))
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

/// The most bits of [`memory_exponent`]: a power past `2^12 - 1` is as good as 0 below a full
/// memory and 1 at it.
const EXPONENT_BITS: u32 = 12;

/// The power `n` of a worker's booked memory share `u` (with `request`'s blocks) that is the
/// chance `request` waits there for memory: `capacity / (2 · prompt blocks)`, half the number
/// of such requests that fit. A request that needs a large share of the memory finds it taken
/// long before the worker is full; one that needs a sliver, only when it is nearly full.
fn memory_exponent(config: &ExpectedTtftConfig, request: &RouteContext<'_>) -> u32 {
    let capacity = config.kv_capacity_blocks.unwrap_or(0) as f64;
    exponent_of(capacity, twice_blocks(request))
}

/// Twice `request`'s full blocks, at least 1.
fn twice_blocks(request: &RouteContext<'_>) -> f64 {
    2.0 * request.blocks.len().max(1) as f64
}

/// [`memory_exponent`] of a `capacity` for a prompt of `twice_blocks / 2` blocks, rounded half
/// up: one half added and the fraction cut by the cast (which the compiler makes vector
/// instructions of for a batch of workers, where `f64::round` is a library call each).
#[inline(always)]
fn exponent_of(capacity: f64, twice_blocks: f64) -> u32 {
    let slots = (capacity / twice_blocks + 0.5) as u32;
    slots.clamp(1, (1 << EXPONENT_BITS) - 1)
}

/// `base^n` for `n < 2^EXPONENT_BITS`, by squaring, in the same steps for every `n` (so that
/// a batch of workers is computed without a branch).
#[cfg(test)]
fn power(base: f64, n: u32) -> f64 {
    power_in::<EXPONENT_BITS>(base, n)
}

/// [`power`] for `n < 2^STEPS`, in `STEPS` steps: the same value, bit for bit, as the steps
/// past `n`'s highest bit multiply the result by exactly 1 and square what nobody reads.
#[inline(always)]
fn power_in<const STEPS: u32>(base: f64, n: u32) -> f64 {
    debug_assert!(STEPS >= 32 || n >> STEPS == 0);
    let (mut result, mut square) = (1.0, base);
    for bit in 0..STEPS {
        let factor = if (n >> bit) & 1 == 1 { square } else { 1.0 };
        result *= factor;
        square *= square;
    }
    result
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
        // The worker's own capacity where it reported one, else the configured one.
        let config = &ExpectedTtftConfig {
            kv_capacity_blocks: w
                .load
                .kv_capacity_blocks
                .filter(|&blocks| blocks > 0)
                .or(config.kv_capacity_blocks),
            ..*config
        };
        let overflow = config
            .kv_capacity_blocks
            .map_or(0.0, |capacity| (held - capacity as f64).max(0.0));
        let share = config.kv_capacity_blocks.map_or(0.0, |capacity| {
            (held * (1.0 / capacity.max(1) as f64)).min(1.0)
        });
        let waits = power(share, memory_exponent(config, request));
        ttft + config.compute_weight * work
            + stall
            + config.decode_ms_per_block * held
            + config.overflow_ms_per_block * overflow
            + config.memory_wait_ms * waits
    }

    #[test]
    fn the_power_by_squaring_is_the_power() {
        for base in [0.0, 0.1, 0.5, 0.9, 0.99, 1.0] {
            for n in [1, 2, 3, 7, 64, 100, 1000, 4095] {
                let expected = f64::powi(base, n as i32);
                let got = power(base, n);
                assert!(
                    (got - expected).abs() <= 1e-12 * expected.max(1e-300),
                    "{base}^{n}"
                );
            }
        }
    }

    #[test]
    fn fewer_steps_give_the_same_power_bit_for_bit_below_their_bound() {
        for base in [0.0, 1e-300, 0.1, 0.37, 0.5, 0.9, 0.999_999, 1.0] {
            for n in 0..(1u32 << 8) {
                let expected = power(base, n).to_bits();
                if n < 16 {
                    assert_eq!(power_in::<4>(base, n).to_bits(), expected, "{base}^{n}");
                }
                if n < 64 {
                    assert_eq!(power_in::<6>(base, n).to_bits(), expected, "{base}^{n}");
                }
                assert_eq!(power_in::<8>(base, n).to_bits(), expected, "{base}^{n}");
            }
        }
    }

    #[test]
    fn costs_are_the_formulas_bit_for_bit_with_or_without_a_prefix() {
        let mut next = crate::test_rng::below_from(0x9E37_79B9_7F4A_7C15);
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
                // Every worker's capacity its own, none reported, or every one the same: each
                // form of the memory terms (with a configured capacity or without).
                let reports = next(3);
                // (Exponents of every width: 7 blocks to 1,000,000, clamped at 4,095.)
                let same = [Some(40), Some(2000), Some(7), Some(1_000_000)][next(4) as usize];
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
                                // Some workers report their own capacity, some none.
                                kv_capacity_blocks: match reports {
                                    0 => [None, Some(0), Some(40), Some(2000)][next(4) as usize],
                                    1 => [None, Some(0)][next(2) as usize],
                                    _ => same,
                                },
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
