//! Picking the next token from logits: greedy, or temperature with top-k and top-p, seeded.

use dynamo_core::SamplingOptions;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The sampler of one sequence.
#[derive(Debug)]
pub(crate) struct Sampler {
    temperature: f32,
    top_k: Option<usize>,
    top_p: f32,
    rng: StdRng,
}

impl Sampler {
    pub(crate) fn new(options: &SamplingOptions) -> Self {
        let rng = match options.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Sampler {
            temperature: options.temperature.unwrap_or(1.0),
            top_k: options.top_k.map(|k| k.max(1) as usize),
            top_p: options.top_p.unwrap_or(1.0),
            rng,
        }
    }

    /// The next token.
    pub(crate) fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.temperature <= 0.0 || self.top_k == Some(1) {
            return argmax(logits);
        }
        let mut candidates: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(id, &logit)| (id as u32, logit / self.temperature))
            .collect();
        candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        if let Some(k) = self.top_k {
            candidates.truncate(k);
        }
        let max = candidates.first().map_or(0.0, |c| c.1);
        let mut total = 0.0;
        for candidate in &mut candidates {
            candidate.1 = (candidate.1 - max).exp();
            total += candidate.1;
        }
        // Keep the smallest head whose probability reaches top_p.
        let mut kept = 0.0;
        let mut keep = candidates.len();
        for (i, candidate) in candidates.iter().enumerate() {
            kept += candidate.1 / total;
            if kept >= self.top_p {
                keep = i + 1;
                break;
            }
        }
        candidates.truncate(keep);
        let kept_total: f32 = candidates.iter().map(|c| c.1).sum();
        let mut pick = self.rng.random::<f32>() * kept_total;
        for &(id, weight) in &candidates {
            if pick < weight {
                return id;
            }
            pick -= weight;
        }
        candidates.last().map_or(0, |c| c.0)
    }
}

/// The index of the largest logit (the first one on ties).
pub(crate) fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &logit) in logits.iter().enumerate() {
        if logit > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_largest_and_seeds_repeat() {
        let logits = [0.1, 2.0, 1.9, -1.0];
        let greedy = SamplingOptions {
            temperature: Some(0.0),
            ..SamplingOptions::default()
        };
        assert_eq!(Sampler::new(&greedy).sample(&logits), 1);
        let seeded = SamplingOptions {
            temperature: Some(1.0),
            seed: Some(7),
            ..SamplingOptions::default()
        };
        let draw = |options: &SamplingOptions| {
            let mut sampler = Sampler::new(options);
            (0..20).map(|_| sampler.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(&seeded), draw(&seeded));
        let top2 = SamplingOptions {
            top_k: Some(2),
            ..seeded.clone()
        };
        assert!(draw(&top2).iter().all(|&id| id == 1 || id == 2));
    }
}
