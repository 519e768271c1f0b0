//! Picking the next token from logits, in vLLM's order: the repetition, frequency and presence
//! penalties on the logits; then greedy, or temperature with min-p, top-k and top-p, seeded.

use std::collections::HashMap;

use dynamo_core::SamplingOptions;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The sampler of one sequence.
#[derive(Debug)]
pub(crate) struct Sampler {
    temperature: f32,
    top_k: Option<usize>,
    top_p: f32,
    min_p: f32,
    penalties: Option<Penalties>,
    rng: StdRng,
}

/// vLLM's penalties, with the tokens they count, kept as the sequence grows.
#[derive(Debug)]
struct Penalties {
    presence: f32,
    frequency: f32,
    repetition: f32,
    /// Every distinct token of the prompt and the output so far.
    seen: HashMap<u32, Seen>,
    /// The penalised logits of the step, reused from step to step.
    scratch: Vec<f32>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    in_prompt: bool,
    /// How many times the sequence generated it.
    generated: u32,
}

impl Penalties {
    /// The penalties `options` sets, counting `tokens`, whose last `generated` are output;
    /// `None` when every penalty is neutral.
    fn new(options: &SamplingOptions, tokens: &[u32], generated: usize) -> Option<Self> {
        let presence = options.presence_penalty.unwrap_or(0.0);
        let frequency = options.frequency_penalty.unwrap_or(0.0);
        let repetition = options.repetition_penalty.unwrap_or(1.0);
        if presence == 0.0 && frequency == 0.0 && repetition == 1.0 {
            return None;
        }
        let mut penalties = Penalties {
            presence,
            frequency,
            repetition,
            seen: HashMap::new(),
            scratch: Vec::new(),
        };
        let prompt_len = tokens.len() - generated.min(tokens.len());
        for &token in &tokens[..prompt_len] {
            penalties.seen.entry(token).or_default().in_prompt = true;
        }
        for &token in &tokens[prompt_len..] {
            penalties.record(token);
        }
        Some(penalties)
    }

    fn record(&mut self, token: u32) {
        self.seen.entry(token).or_default().generated += 1;
    }

    /// `logits` with the penalties applied: repetition (on prompt and output tokens: a
    /// positive logit divided, another multiplied), then frequency (times the output count)
    /// and presence (once for an output token) subtracted.
    fn apply(&mut self, logits: &[f32]) -> Vec<f32> {
        let mut penalised = std::mem::take(&mut self.scratch);
        penalised.clear();
        penalised.extend_from_slice(logits);
        for (&token, seen) in &self.seen {
            let Some(logit) = penalised.get_mut(token as usize) else {
                continue;
            };
            if *logit > 0.0 {
                *logit /= self.repetition;
            } else {
                *logit *= self.repetition;
            }
            if seen.generated > 0 {
                *logit -= self.frequency * seen.generated as f32;
                *logit -= self.presence;
            }
        }
        penalised
    }
}

impl Sampler {
    /// The sampler of a sequence whose tokens so far are `tokens`, the last `generated` of them
    /// its own output (a continuation's); the penalties count them.
    pub(crate) fn new(options: &SamplingOptions, tokens: &[u32], generated: usize) -> Self {
        let rng = match options.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Sampler {
            temperature: options.temperature.unwrap_or(1.0),
            top_k: options.top_k.map(|k| k.max(1) as usize),
            top_p: options.top_p.unwrap_or(1.0),
            min_p: options.min_p.unwrap_or(0.0),
            penalties: Penalties::new(options, tokens, generated),
            rng,
        }
    }

    /// The sequence generated `token`: the penalties count it from the next step on.
    pub(crate) fn record(&mut self, token: u32) {
        if let Some(penalties) = &mut self.penalties {
            penalties.record(token);
        }
    }

    /// The next token.
    pub(crate) fn sample(&mut self, logits: &[f32]) -> u32 {
        let Some(penalties) = &mut self.penalties else {
            return self.draw(logits);
        };
        let penalised = penalties.apply(logits);
        let token = self.draw(&penalised);
        if let Some(penalties) = &mut self.penalties {
            penalties.scratch = penalised;
        }
        token
    }

    fn draw(&mut self, logits: &[f32]) -> u32 {
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
            // The probability relative to the most likely token's.
            candidate.1 = (candidate.1 - max).exp();
            total += candidate.1;
        }
        if self.min_p > 0.0 {
            // Sorted, so the tokens below min_p times the top probability are a tail. Top-k
            // first or min-p first keep the same head: both cut a sorted list after its top.
            let keep = candidates.partition_point(|c| c.1 >= self.min_p);
            candidates.truncate(keep);
            total = candidates.iter().map(|c| c.1).sum();
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
    use proptest::prelude::*;
    use rand::Rng;

    fn greedy() -> SamplingOptions {
        SamplingOptions {
            temperature: Some(0.0),
            ..SamplingOptions::default()
        }
    }

    #[test]
    fn greedy_takes_the_largest_and_seeds_repeat() {
        let logits = [0.1, 2.0, 1.9, -1.0];
        assert_eq!(Sampler::new(&greedy(), &[], 0).sample(&logits), 1);
        let seeded = SamplingOptions {
            temperature: Some(1.0),
            seed: Some(7),
            ..SamplingOptions::default()
        };
        let draw = |options: &SamplingOptions| {
            let mut sampler = Sampler::new(options, &[], 0);
            (0..20).map(|_| sampler.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(&seeded), draw(&seeded));
        let top2 = SamplingOptions {
            top_k: Some(2),
            ..seeded.clone()
        };
        assert!(draw(&top2).iter().all(|&id| id == 1 || id == 2));
    }

    /// The sampler before min-p and the penalties, kept as the reference that the defaults
    /// must still match draw for draw.
    fn before(options: &SamplingOptions, rng: &mut StdRng, logits: &[f32]) -> u32 {
        let temperature = options.temperature.unwrap_or(1.0);
        let top_k = options.top_k.map(|k| k.max(1) as usize);
        if temperature <= 0.0 || top_k == Some(1) {
            return argmax(logits);
        }
        let mut candidates: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(id, &logit)| (id as u32, logit / temperature))
            .collect();
        candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        if let Some(k) = top_k {
            candidates.truncate(k);
        }
        let max = candidates.first().map_or(0.0, |c| c.1);
        let mut total = 0.0;
        for candidate in &mut candidates {
            candidate.1 = (candidate.1 - max).exp();
            total += candidate.1;
        }
        let mut kept = 0.0;
        let mut keep = candidates.len();
        for (i, candidate) in candidates.iter().enumerate() {
            kept += candidate.1 / total;
            if kept >= options.top_p.unwrap_or(1.0) {
                keep = i + 1;
                break;
            }
        }
        candidates.truncate(keep);
        let kept_total: f32 = candidates.iter().map(|c| c.1).sum();
        let mut pick = rng.random::<f32>() * kept_total;
        for &(id, weight) in &candidates {
            if pick < weight {
                return id;
            }
            pick -= weight;
        }
        candidates.last().map_or(0, |c| c.0)
    }

    #[test]
    fn defaults_and_neutral_values_sample_as_before() {
        let logits: Vec<f32> = (0..64)
            .map(|i| ((i * 37) % 23) as f32 * 0.3 - 2.0)
            .collect();
        let shapes = [
            (Some(1.0), None, None),
            (Some(0.7), Some(8), None),
            (Some(1.3), None, Some(0.9)),
            (Some(0.0), None, None),
        ];
        for (temperature, top_k, top_p) in shapes {
            let options = SamplingOptions {
                temperature,
                top_k,
                top_p,
                seed: Some(11),
                ..SamplingOptions::default()
            };
            let neutral = SamplingOptions {
                min_p: Some(0.0),
                presence_penalty: Some(0.0),
                frequency_penalty: Some(0.0),
                repetition_penalty: Some(1.0),
                ..options.clone()
            };
            let mut rng = StdRng::seed_from_u64(11);
            let expected: Vec<u32> = (0..200)
                .map(|_| before(&options, &mut rng, &logits))
                .collect();
            for options in [&options, &neutral] {
                let mut sampler = Sampler::new(options, &[3, 5, 5], 1);
                assert!(sampler.penalties.is_none());
                let drawn: Vec<u32> = (0..200)
                    .map(|_| {
                        let token = sampler.sample(&logits);
                        sampler.record(token);
                        token
                    })
                    .collect();
                assert_eq!(drawn, expected, "{options:?}");
            }
        }
    }

    #[test]
    fn repetition_penalty_divides_a_positive_logit_and_multiplies_a_negative_one() {
        let options = |penalty| SamplingOptions {
            repetition_penalty: Some(penalty),
            ..greedy()
        };
        let logits = [2.0, 1.9, 0.1, -1.0];
        assert_eq!(Sampler::new(&greedy(), &[0, 2], 0).sample(&logits), 0);
        // In the prompt: 2.0 / 1.2 is below 1.9.
        assert_eq!(Sampler::new(&options(1.2), &[0, 2], 0).sample(&logits), 1);
        // Generated: the same.
        let mut sampler = Sampler::new(&options(1.2), &[2], 0);
        assert_eq!(sampler.sample(&logits), 0);
        sampler.record(0);
        assert_eq!(sampler.sample(&logits), 1);
        // A negative logit is multiplied: -1.0 * 2 falls below -1.5 (divided it would rise).
        let negative = [-1.0, -1.5, -3.0];
        assert_eq!(Sampler::new(&options(2.0), &[0], 0).sample(&negative), 1);
        // Below 1 it favours the tokens seen.
        assert_eq!(Sampler::new(&options(0.5), &[1], 0).sample(&negative), 1);
    }

    #[test]
    fn frequency_counts_each_generated_token_and_presence_only_once() {
        let logits = [2.0, 1.5];
        let frequency = SamplingOptions {
            frequency_penalty: Some(0.2),
            ..greedy()
        };
        // Prompt tokens are not counted.
        let mut sampler = Sampler::new(&frequency, &[0, 0, 0, 0], 0);
        assert_eq!(sampler.sample(&logits), 0);
        sampler.record(0);
        assert_eq!(sampler.sample(&logits), 0, "2.0 - 0.2");
        sampler.record(0);
        sampler.record(0);
        assert_eq!(sampler.sample(&logits), 1, "2.0 - 0.6");
        let presence = SamplingOptions {
            presence_penalty: Some(0.3),
            ..greedy()
        };
        let mut sampler = Sampler::new(&presence, &[0, 0, 0, 0], 0);
        for _ in 0..5 {
            sampler.record(0);
        }
        assert_eq!(sampler.sample(&logits), 0, "2.0 - 0.3, however often");
        let presence = SamplingOptions {
            presence_penalty: Some(0.6),
            ..greedy()
        };
        let mut sampler = Sampler::new(&presence, &[], 0);
        sampler.record(0);
        assert_eq!(sampler.sample(&logits), 1, "2.0 - 0.6");
        // A continuation's output so far counts as generated.
        assert_eq!(Sampler::new(&presence, &[1, 0], 1).sample(&logits), 1);
        assert_eq!(Sampler::new(&presence, &[1, 0], 0).sample(&logits), 0);
    }

    /// The tokens 4,000 seeded draws reach.
    fn reached(options: &SamplingOptions, logits: &[f32]) -> Vec<u32> {
        let mut sampler = Sampler::new(options, &[], 0);
        let mut hits = vec![0; logits.len()];
        for _ in 0..4_000 {
            hits[sampler.sample(logits) as usize] += 1;
        }
        (0..logits.len() as u32)
            .filter(|&id| hits[id as usize] > 0)
            .collect()
    }

    #[test]
    fn min_p_drops_exactly_the_tokens_below_min_p_times_the_top_probability() {
        // Probabilities in the ratios 1 : 0.5 : 0.3 : 0.1 : 0.05.
        let logits: Vec<f32> = [1.0f32, 0.5, 0.3, 0.1, 0.05]
            .iter()
            .map(|p| p.ln())
            .collect();
        let options = |min_p, temperature| SamplingOptions {
            temperature: Some(temperature),
            min_p: Some(min_p),
            seed: Some(3),
            ..SamplingOptions::default()
        };
        assert_eq!(reached(&options(0.0, 1.0), &logits), [0, 1, 2, 3, 4]);
        assert_eq!(reached(&options(0.25, 1.0), &logits), [0, 1, 2]);
        assert_eq!(reached(&options(0.4, 1.0), &logits), [0, 1]);
        assert_eq!(reached(&options(1.0, 1.0), &logits), [0]);
        // After the temperature: at 2 the ratios are their square roots (1, 0.71, 0.55, 0.32).
        assert_eq!(reached(&options(0.4, 2.0), &logits), [0, 1, 2]);
        // Top-p then shares out what min-p keeps: 1 / 1.5 of it is token 0.
        let top_p = SamplingOptions {
            top_p: Some(0.6),
            ..options(0.4, 1.0)
        };
        assert_eq!(reached(&top_p, &logits), [0]);
    }

    /// vLLM's penalties, written from their definition over the whole sequence.
    fn reference(
        logits: &[f32],
        prompt: &[u32],
        output: &[u32],
        options: &SamplingOptions,
    ) -> Vec<f32> {
        let presence = options.presence_penalty.unwrap_or(0.0);
        let frequency = options.frequency_penalty.unwrap_or(0.0);
        let repetition = options.repetition_penalty.unwrap_or(1.0);
        let mut penalised = logits.to_vec();
        for (id, logit) in penalised.iter_mut().enumerate() {
            let id = id as u32;
            let count = output.iter().filter(|&&t| t == id).count();
            if count > 0 || prompt.contains(&id) {
                *logit = if *logit > 0.0 {
                    *logit / repetition
                } else {
                    *logit * repetition
                };
            }
            if count > 0 {
                *logit -= frequency * count as f32;
                *logit -= presence;
            }
        }
        penalised
    }

    fn penalised(sampler: &mut Sampler, logits: &[f32]) -> Vec<f32> {
        sampler
            .penalties
            .as_mut()
            .map_or_else(|| logits.to_vec(), |p| p.apply(logits))
    }

    proptest! {
        #[test]
        fn penalties_match_their_definition(
            logits in prop::collection::vec(-5.0f32..5.0, 1..16),
            prompt in prop::collection::vec(0u32..20, 0..12),
            output in prop::collection::vec(0u32..20, 0..12),
            presence in -2.0f32..2.0,
            frequency in -2.0f32..2.0,
            repetition in 0.1f32..3.0,
        ) {
            let options = SamplingOptions {
                presence_penalty: Some(presence),
                frequency_penalty: Some(frequency),
                repetition_penalty: Some(repetition),
                ..greedy()
            };
            let expected = reference(&logits, &prompt, &output, &options);
            // Counted from the whole sequence at once, or step by step.
            let whole: Vec<u32> = prompt.iter().chain(&output).copied().collect();
            let mut at_once = Sampler::new(&options, &whole, output.len());
            let mut stepwise = Sampler::new(&options, &prompt, 0);
            for &token in &output {
                stepwise.record(token);
            }
            prop_assert_eq!(&penalised(&mut at_once, &logits), &expected);
            prop_assert_eq!(&penalised(&mut stepwise, &logits), &expected);
            prop_assert_eq!(at_once.sample(&logits), argmax(&expected));
        }

        #[test]
        fn repetition_penalty_agrees_with_candle_transformers(
            logits in prop::collection::vec(
                prop_oneof![-5.0f32..-0.01, 0.01f32..5.0], 1..16),
            context in prop::collection::vec(0u32..20, 0..12),
            penalty in 0.1f32..3.0,
        ) {
            let options = SamplingOptions { repetition_penalty: Some(penalty), ..greedy() };
            let tensor = candle_core::Tensor::new(logits.as_slice(), &candle_core::Device::Cpu)
                .and_then(|t| {
                    candle_transformers::utils::apply_repeat_penalty(&t, penalty, &context)
                })
                .and_then(|t| t.to_vec1::<f32>());
            let Ok(theirs) = tensor else {
                return Err(TestCaseError::fail("candle failed"));
            };
            let mut ours = Sampler::new(&options, &context, 0);
            prop_assert_eq!(penalised(&mut ours, &logits), theirs);
        }
    }
}
