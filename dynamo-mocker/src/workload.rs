//! Synthetic traces with chosen sharing patterns, to judge routers on more than one trace.
//!
//! [`generate`] writes a seeded Mooncake-format trace ([`TraceRequest`]s, trace blocks of
//! [`TRACE_BLOCK_TOKENS`]) in one of five [`SharingPattern`]s. Conversations are modelled as
//! they reach an engine: each turn's prompt is the previous prompt, the previous answer and a
//! new user message, so it extends the previous turn's full blocks; a block that was partial
//! in one turn is completed by the next, so it gets a new id (its content changed). Lengths
//! are log-normal, arrivals Poisson (conversations start as a Poisson process, and each turn
//! follows the previous one after an exponential think time).
//!
//! ```
//! use dynamo_mocker::{SharingPattern, WorkloadConfig, generate};
//!
//! let config = WorkloadConfig { requests: 200, ..WorkloadConfig::new(SharingPattern::HotPrefix, 7) };
//! let trace = generate(&config);
//! assert_eq!(trace.len(), 200);
//! // Every request starts with the same system prompt.
//! assert!(trace.iter().all(|r| r.hash_ids[0] == trace[0].hash_ids[0]));
//! // The same seed gives the same trace.
//! assert_eq!(generate(&config), trace);
//! ```

use std::io::Write;

use crate::TraceRequest;

/// Tokens per trace block (`hash_id`) in generated traces (`--trace-block-size 512`).
pub const TRACE_BLOCK_TOKENS: u64 = 512;

/// How the prompts of a generated trace share their prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharingPattern {
    /// Many conversations of 1–6 turns with short prompts (a chat service): each turn
    /// extends the previous one.
    ManyShortChats,
    /// A few (16) long conversations side by side, each growing to tens of thousands of
    /// tokens (coding agents): each turn extends the previous one.
    FewLongChats,
    /// One hot system prompt of 8,192 tokens before every request's own text.
    HotPrefix,
    /// Documents of 4k–32k tokens with Zipf popularity, each request a document and a
    /// question (retrieval, shared documents): requests branch from shared prefixes.
    Documents,
    /// No two requests share a block.
    NoSharing,
}

/// The settings of [`generate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkloadConfig {
    /// The sharing pattern.
    pub pattern: SharingPattern,
    /// The number of requests.
    pub requests: usize,
    /// Requests per second (on average); `None` takes the pattern's default ([`rate`]), with
    /// which 4 of the replay's default workers are busy (`NoSharing` saturates them) and 16
    /// lightly loaded.
    ///
    /// [`rate`]: WorkloadConfig::rate
    pub rate_per_s: Option<f64>,
    /// The seed: the same settings and seed give the same trace.
    pub seed: u64,
}

impl WorkloadConfig {
    /// 4,000 requests of `pattern` at its default rate.
    pub fn new(pattern: SharingPattern, seed: u64) -> Self {
        WorkloadConfig {
            pattern,
            requests: 4000,
            rate_per_s: None,
            seed,
        }
    }

    /// The mean request rate, per second.
    pub fn rate(&self) -> f64 {
        self.rate_per_s.unwrap_or(match self.pattern {
            SharingPattern::ManyShortChats => 40.0,
            SharingPattern::FewLongChats => 6.0,
            SharingPattern::HotPrefix => 40.0,
            SharingPattern::Documents => 12.0,
            SharingPattern::NoSharing => 25.0,
        })
    }
}

/// A seeded trace of `config.requests` requests in `config.pattern`, in arrival order, with
/// whole-millisecond timestamps.
pub fn generate(config: &WorkloadConfig) -> Vec<TraceRequest> {
    let mut g = Generator {
        rng: SplitMix(config.seed),
        next_id: 0,
        requests: Vec::with_capacity(config.requests),
    };
    let gap_ms = 1000.0 / config.rate().max(f64::MIN_POSITIVE);
    match config.pattern {
        SharingPattern::ManyShortChats => g.chats(config.requests, gap_ms, ChatShape::SHORT),
        SharingPattern::FewLongChats => g.chats(config.requests, gap_ms, ChatShape::LONG),
        SharingPattern::HotPrefix => {
            let system = g.fresh_context(8192);
            g.singles(config.requests, gap_ms, |g| {
                let user = g.rng.log_normal(1024.0, 0.8, 64, 8192);
                (g.extend(&system, user).1, g.output())
            });
        }
        SharingPattern::Documents => {
            let documents: Vec<Context> = (0..200)
                .map(|_| {
                    let tokens = g.rng.log_normal(12_000.0, 0.6, 4096, 32_768);
                    g.fresh_context(tokens)
                })
                .collect();
            let zipf = Zipf::new(documents.len(), 1.0);
            g.singles(config.requests, gap_ms, |g| {
                let document = &documents[zipf.sample(&mut g.rng)];
                let question = g.rng.log_normal(200.0, 0.5, 16, 2048);
                (g.extend(document, question).1, g.output())
            });
        }
        SharingPattern::NoSharing => g.singles(config.requests, gap_ms, |g| {
            let tokens = g.rng.log_normal(4096.0, 0.8, 128, 65_536);
            (g.extend(&Context::default(), tokens).1, g.output())
        }),
    }
    let mut requests = g.requests;
    requests.retain(|r| r.timestamp >= 0.0);
    requests.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
    requests.truncate(config.requests);
    requests
}

/// Write `requests` as a Mooncake trace: one JSON object per line, timestamps in whole ms.
///
/// # Errors
///
/// Whatever `out` returns.
pub fn write_mooncake(requests: &[TraceRequest], mut out: impl Write) -> std::io::Result<()> {
    for r in requests {
        let ids: Vec<String> = r.hash_ids.iter().map(u64::to_string).collect();
        writeln!(
            out,
            "{{\"timestamp\": {}, \"input_length\": {}, \"output_length\": {}, \"hash_ids\": [{}]}}",
            r.timestamp.round() as u64,
            r.input_length,
            r.output_length,
            ids.join(", ")
        )?;
    }
    Ok(())
}

/// The shape of a pattern's conversations.
#[derive(Debug, Clone, Copy)]
struct ChatShape {
    /// Conversations open at once (`None`: they start as a Poisson process).
    concurrent: Option<usize>,
    /// Turns per conversation, drawn uniformly from this range.
    turns: (u64, u64),
    /// Median tokens of the first prompt and of each later user message.
    first: f64,
    message: f64,
    /// Mean think time between a conversation's turns, ms.
    think_ms: f64,
    /// A conversation longer than this starts again from a new first prompt.
    max_tokens: u64,
}

impl ChatShape {
    const SHORT: ChatShape = ChatShape {
        concurrent: None,
        turns: (1, 6),
        first: 1500.0,
        message: 300.0,
        think_ms: 20_000.0,
        max_tokens: 32_768,
    };
    const LONG: ChatShape = ChatShape {
        concurrent: Some(16),
        turns: (u64::MAX, u64::MAX),
        first: 8000.0,
        message: 1000.0,
        think_ms: 0.0, // from the rate: each of the 16 takes a 16th of the arrivals
        max_tokens: 100_000,
    };
}

/// A prompt so far: its full blocks' ids and its length.
#[derive(Debug, Clone, Default)]
struct Context {
    full: Vec<u64>,
    tokens: u64,
}

struct Generator {
    rng: SplitMix,
    next_id: u64,
    requests: Vec<TraceRequest>,
}

impl Generator {
    fn fresh_context(&mut self, tokens: u64) -> Context {
        self.extend(&Context::default(), tokens).0
    }

    /// `context` followed by `added` new tokens: the new context (full blocks only) and the
    /// prompt's ids and length (with a fresh id for a partial last block).
    fn extend(&mut self, context: &Context, added: u64) -> (Context, (Vec<u64>, u64)) {
        let tokens = context.tokens + added;
        let kept = (context.tokens / TRACE_BLOCK_TOKENS) as usize;
        let mut ids = context.full[..kept.min(context.full.len())].to_vec();
        let blocks = tokens.div_ceil(TRACE_BLOCK_TOKENS) as usize;
        while ids.len() < blocks {
            ids.push(self.next_id);
            self.next_id += 1;
        }
        let full = (tokens / TRACE_BLOCK_TOKENS) as usize;
        let next = Context {
            full: ids[..full].to_vec(),
            tokens,
        };
        (next, (ids, tokens))
    }

    fn output(&mut self) -> u64 {
        self.rng.log_normal(200.0, 0.8, 1, 2048)
    }

    fn push(&mut self, at_ms: f64, (hash_ids, input_length): (Vec<u64>, u64), output: u64) {
        self.requests.push(TraceRequest {
            timestamp: at_ms.floor(),
            input_length,
            output_length: output,
            hash_ids,
        });
    }

    /// Independent requests, Poisson arrivals; `make` gives each its prompt and output.
    fn singles(
        &mut self,
        n: usize,
        gap_ms: f64,
        mut make: impl FnMut(&mut Self) -> ((Vec<u64>, u64), u64),
    ) {
        let mut at = 0.0;
        for _ in 0..n {
            let (prompt, output) = make(self);
            self.push(at, prompt, output);
            at += self.rng.exponential(gap_ms);
        }
    }

    /// Conversations of `shape` for twice as long as `n` requests at the rate take (the
    /// caller keeps the first `n`: conversations cut short at the horizon are not kept).
    fn chats(&mut self, n: usize, gap_ms: f64, shape: ChatShape) {
        let horizon = 2.0 * n as f64 * gap_ms;
        match shape.concurrent {
            // Each open conversation takes its share of the arrivals, and a new one takes the
            // place of one that ends.
            Some(open) => {
                let think_ms = gap_ms * open as f64;
                for _ in 0..open {
                    let mut at = self.rng.exponential(think_ms);
                    while at < horizon {
                        at = self.conversation(at, think_ms, &shape, horizon);
                        at += self.rng.exponential(think_ms);
                    }
                }
            }
            // Conversations start often enough for their turns to make the rate.
            None => {
                // They start before 0, so that the trace begins in the steady state (the
                // turns before 0 are dropped).
                let mean_turns = (shape.turns.0 + shape.turns.1) as f64 / 2.0;
                let mut at = -(shape.turns.1 as f64) * shape.think_ms;
                while at < horizon {
                    self.conversation(at, shape.think_ms, &shape, horizon);
                    at += self.rng.exponential(gap_ms * mean_turns);
                }
            }
        }
    }

    /// One conversation from `start`, its turns before `horizon`; returns the time of its
    /// last turn.
    fn conversation(&mut self, start: f64, think_ms: f64, shape: &ChatShape, horizon: f64) -> f64 {
        let turns = if shape.turns.0 == u64::MAX {
            u64::MAX
        } else {
            shape.turns.0 + self.rng.below(shape.turns.1 - shape.turns.0 + 1)
        };
        let mut context = Context::default();
        let mut at = start;
        let mut added = self.rng.log_normal(shape.first, 0.6, 64, 16_384);
        for turn in 0..turns {
            if context.tokens + added > shape.max_tokens {
                break;
            }
            if turn > 0 {
                at += self.rng.exponential(think_ms);
            }
            if at >= horizon {
                break;
            }
            let (next, prompt) = self.extend(&context, added);
            let output = self.output();
            self.push(at, prompt, output);
            context = next;
            // The next prompt carries this answer and a new message.
            added = output + self.rng.log_normal(shape.message, 0.8, 16, 8192);
        }
        at
    }
}

/// Zipf sampling over `0..n` by inverting the cumulative weights.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, exponent: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=n.max(1))
            .map(|k| {
                total += 1.0 / (k as f64).powf(exponent);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    fn sample(&self, rng: &mut SplitMix) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let x = rng.unit() * total;
        self.cumulative
            .partition_point(|&c| c < x)
            .min(self.cumulative.len() - 1)
    }
}

/// SplitMix64: a small seeded generator, enough for synthetic traces.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn exponential(&mut self, mean: f64) -> f64 {
        -mean * self.unit().ln()
    }

    /// Log-normal with this median and shape, rounded and clamped to `[lo, hi]`.
    fn log_normal(&mut self, median: f64, sigma: f64, lo: u64, hi: u64) -> u64 {
        let (u, v) = (self.unit(), self.unit());
        let normal = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
        ((median * (sigma * normal).exp()).round() as u64).clamp(lo, hi)
    }
}

#[cfg(test)]
mod tests;
