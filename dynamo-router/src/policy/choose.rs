//! Choosing among workers by cost: lowest wins, exact ties at random, or a softmax sample.

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use smallvec::SmallVec;

use super::{Decision, WorkerState};

/// A random generator shared by the tasks that use one policy.
#[derive(Debug)]
pub(crate) struct SharedRng(Mutex<SmallRng>);

impl SharedRng {
    /// Seeded for reproducible decisions, or from the operating system.
    pub(crate) fn new(seed: Option<u64>) -> Self {
        SharedRng(Mutex::new(match seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_os_rng(),
        }))
    }

    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut SmallRng) -> T) -> T {
        f(&mut self.0.lock())
    }
}

/// The worker with the lowest cost; exact ties are broken uniformly at random.
///
/// With `temperature > 0` the choice is instead sampled with probability proportional to
/// `exp(-c / temperature)`, where `c` is the cost normalised to `[0, 1]` over the workers, so
/// the temperature means the same whatever the costs' scale. A NaN cost never wins.
pub(crate) fn lowest_cost(
    workers: &[WorkerState],
    cost: impl Fn(&WorkerState) -> f64,
    temperature: f64,
    rng: &SharedRng,
) -> Decision {
    lowest_of(workers, workers.iter().map(cost), temperature, rng)
}

/// [`lowest_cost`] with the workers' costs given in their order.
pub(crate) fn lowest_of(
    workers: &[WorkerState],
    costs: impl Iterator<Item = f64>,
    temperature: f64,
    rng: &SharedRng,
) -> Decision {
    let costs = costs.map(|c| if c.is_nan() { f64::INFINITY } else { c });
    let index = rng.with(|rng| {
        if temperature > 0.0 {
            // Inline up to 128 workers: no allocation per decision.
            let costs: SmallVec<[f64; 128]> = costs.collect();
            sample_softmax(&costs, temperature, rng)
        } else {
            // The lowest cost needs no list of costs: keep the best as they come.
            min_with_random_ties(costs, rng)
        }
    });
    index
        .and_then(|i| workers.get(i))
        .map_or(Decision::Queue, |w| Decision::Route(w.worker))
}

/// The position of the lowest of `costs`, ties broken uniformly at random.
fn min_with_random_ties(costs: impl Iterator<Item = f64>, rng: &mut SmallRng) -> Option<usize> {
    let mut costs = costs.enumerate();
    let (mut best, mut lowest) = costs.next()?;
    let mut ties = 1u32;
    for (i, c) in costs {
        if c < lowest {
            (best, lowest, ties) = (i, c, 1);
        } else if c == lowest {
            // Reservoir sampling: the k-th tie replaces the pick with probability 1/k.
            ties += 1;
            if rng.random_range(0..ties) == 0 {
                best = i;
            }
        }
    }
    Some(best)
}

fn sample_softmax(costs: &[f64], temperature: f64, rng: &mut SmallRng) -> Option<usize> {
    let finite = || costs.iter().copied().filter(|c| c.is_finite());
    let min = finite().fold(f64::INFINITY, f64::min);
    let max = finite().fold(f64::NEG_INFINITY, f64::max);
    if !min.is_finite() {
        return min_with_random_ties(costs.iter().copied(), rng);
    }
    let span = if max > min { max - min } else { 1.0 };
    // Inline up to 128 workers, as the costs are.
    let weights: SmallVec<[f64; 128]> = costs
        .iter()
        .map(|&c| {
            if c.is_finite() {
                (-((c - min) / span) / temperature).exp()
            } else {
                0.0
            }
        })
        .collect();
    let total: f64 = weights.iter().sum();
    let mut target = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if target < *w {
            return Some(i);
        }
        target -= w;
    }
    weights.iter().rposition(|w| *w > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::WorkerLoad;
    use dynamo_core::WorkerId;

    fn workers(n: u64) -> Vec<WorkerState> {
        (0..n)
            .map(|i| WorkerState {
                worker: WorkerId::new(i),
                cached: Default::default(),
                in_flight: 0,
                load: WorkerLoad::default(),
            })
            .collect()
    }

    #[test]
    fn ties_are_broken_across_every_tied_worker() {
        let rng = SharedRng::new(Some(7));
        let ws = workers(4);
        let mut seen = [0u32; 4];
        for _ in 0..400 {
            // Workers 1 and 3 tie for the lowest cost.
            let cost = |w: &WorkerState| if w.worker.worker % 2 == 1 { 1.0 } else { 2.0 };
            let Decision::Route(w) = lowest_cost(&ws, cost, 0.0, &rng) else {
                panic!("a worker must be chosen");
            };
            seen[w.worker as usize] += 1;
        }
        assert_eq!((seen[0], seen[2]), (0, 0));
        assert!(seen[1] > 150 && seen[3] > 150, "{seen:?}");
    }

    #[test]
    fn temperature_spreads_choices_and_nan_never_wins() {
        let rng = SharedRng::new(Some(1));
        let ws = workers(3);
        let cost = |w: &WorkerState| match w.worker.worker {
            0 => 0.0,
            1 => 1.0,
            _ => f64::NAN,
        };
        let mut seen = [0u32; 3];
        for _ in 0..1000 {
            if let Decision::Route(w) = lowest_cost(&ws, cost, 1.0, &rng) {
                seen[w.worker as usize] += 1;
            }
        }
        assert_eq!(seen[2], 0);
        // exp(0) : exp(-1) is about 73% : 27%.
        assert!((600..850).contains(&seen[0]), "{seen:?}");
        assert_eq!(
            lowest_cost(&ws, cost, 0.0, &rng),
            Decision::Route(WorkerId::new(0))
        );
    }
}
