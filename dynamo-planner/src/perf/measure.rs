//! Profiling a live engine: the tables of a [`PerfProfile`], measured on the wall clock by
//! sending the engine requests, as `dynamo-serve profile` does for the candle engine.

use std::time::Instant;

use dynamo_core::{Engine, EngineExt, ErrorClass, GenerateRequest, StopConditions, Token};
use futures::StreamExt;

use super::{DecodePoint, PerfProfile, PrefillPoint};
use crate::Error;

/// The prompt lengths, context lengths and batch sizes a [`measure_engine`] sweeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSweep {
    /// The model name the requests carry.
    pub model: String,
    /// Prompt lengths of the prefill table (one request at a time, nothing cached). Default
    /// 128 to 2,048 by powers of two.
    pub input_tokens: Vec<u64>,
    /// Context lengths of the decode table. Default 256, 1,024 and 2,048.
    pub context_tokens: Vec<u64>,
    /// Batch sizes of the decode table. Default 1 to 8 by powers of two.
    pub concurrency: Vec<u32>,
    /// What the engine holds at once, if the caller knows: then each context's decode row
    /// also gets the largest batch that fits, and listed batches past it are skipped, as the
    /// simulator's profile rows end (and NVIDIA Dynamo's profiler sweeps decode up to what the
    /// cache holds). Default none: only the listed batches, those the engine refuses as
    /// overloaded left out.
    pub limits: Option<BatchLimits>,
    /// Output tokens each decode request generates (end of sequence ignored). Default 16.
    pub decode_steps: u32,
    /// Token ids the prompts are drawn from: `first..last` (default 1,000..30,000), so that no
    /// two prompts share a block and none holds a special token.
    pub token_range: (Token, Token),
}

impl LiveSweep {
    /// The default sweep, for requests naming `model`.
    pub fn new(model: impl Into<String>) -> Self {
        LiveSweep {
            model: model.into(),
            input_tokens: vec![128, 256, 512, 1024, 2048],
            context_tokens: vec![256, 1024, 2048],
            concurrency: vec![1, 2, 4, 8],
            limits: None,
            decode_steps: 16,
            token_range: (1_000, 30_000),
        }
    }
}

/// What one engine holds at once: its KV cache and the requests it runs together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// KV blocks in the cache.
    pub kv_blocks: u64,
    /// Tokens per block.
    pub block_size: u32,
    /// Requests the engine runs at once.
    pub max_running: u32,
}

impl BatchLimits {
    /// The largest batch of requests of `tokens_each` tokens (prompt and output) that runs at
    /// once with every request's blocks in the cache; none if one request does not fit.
    ///
    /// ```
    /// use dynamo_planner::perf::BatchLimits;
    ///
    /// let limits = BatchLimits { kv_blocks: 512, block_size: 16, max_running: 16 };
    /// assert_eq!(limits.largest_batch(256 + 16), Some(16)); // 17 blocks each: 30 fit, 16 run
    /// assert_eq!(limits.largest_batch(2048 + 16), Some(3)); // 129 blocks each
    /// assert_eq!(limits.largest_batch(9000), None);
    /// ```
    pub fn largest_batch(&self, tokens_each: u64) -> Option<u32> {
        let blocks_each = tokens_each
            .div_ceil(u64::from(self.block_size.max(1)))
            .max(1);
        let fit = (self.kv_blocks / blocks_each).min(u64::from(self.max_running));
        u32::try_from(fit).ok().filter(|&fit| fit > 0)
    }
}

/// Measure `engine` over `sweep`: the prefill table (time to first token of one request at a
/// time, and prompt tokens per second), then the decode table (for each context length and
/// batch size, that many requests at once on prompts computed just before, so found cached,
/// each generating `decode_steps` tokens: the mean time between their tokens and the batch's
/// output tokens per second). `kv_usage` is asked for the engine's KV usage (`0..=1`) once
/// every request of a batch has its second token, if
/// the caller can read it (an engine's load probe); otherwise the decode points say 0. A batch
/// the engine refuses as overloaded (its contexts do not fit in the KV cache) is left out of the
/// table, as the simulator's profile leaves it out.
///
/// Every prompt is fresh (no prefix cache), and one warm-up request runs first. The figures
/// are wall-clock times of this process: measure on a machine doing nothing else.
///
/// ```
/// use dynamo_core::EchoEngine;
/// use dynamo_planner::perf::{LiveSweep, measure_engine};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dynamo_planner::Error> {
/// let sweep = LiveSweep {
///     input_tokens: vec![64, 256],
///     context_tokens: vec![128],
///     concurrency: vec![1, 4],
///     decode_steps: 4,
///     ..LiveSweep::new("echo")
/// };
/// let profile = measure_engine(EchoEngine::new(), &sweep, || None).await?;
/// assert_eq!((profile.prefill().len(), profile.decode().len()), (2, 2));
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::Profile`] when the engine fails a request or ends one early, or the sweep is
/// empty; the engine's error is in the reason.
pub async fn measure_engine<E>(
    engine: E,
    sweep: &LiveSweep,
    kv_usage: impl Fn() -> Option<f64>,
) -> Result<PerfProfile, Error>
where
    E: Engine + Clone + Send + 'static,
    E::Future: Send,
{
    let failed = |error: dynamo_core::Error| Error::Profile {
        reason: format!("measuring the engine: {error}"),
    };
    let mut prompts = Prompts::new(sweep.token_range);
    let warm_up = sweep.input_tokens.first().copied().unwrap_or(64);
    timed(engine.clone(), sweep, prompts.next(warm_up), 1, || {})
        .await
        .map_err(failed)?;
    let mut prefill = Vec::new();
    for &input_tokens in &sweep.input_tokens {
        let times = timed(engine.clone(), sweep, prompts.next(input_tokens), 1, || {})
            .await
            .map_err(failed)?;
        let ttft_ms = times.first_ms.max(1e-3);
        prefill.push(PrefillPoint {
            input_tokens,
            ttft_ms,
            tokens_per_s: input_tokens as f64 * 1e3 / ttft_ms,
        });
    }
    let mut decode = Vec::new();
    let output_tokens = sweep.decode_steps.max(2);
    for &context_tokens in &sweep.context_tokens {
        let mut batches = sweep.concurrency.clone();
        if let Some(limits) = sweep.limits {
            let largest = limits.largest_batch(context_tokens + u64::from(output_tokens));
            batches.retain(|&batch| largest.is_some_and(|largest| batch <= largest));
            batches.extend(largest);
        }
        batches.sort_unstable();
        batches.dedup();
        batches.retain(|&batch| batch > 0);
        for concurrency in batches {
            // The batch's prompts are computed first, one request each, so that the batch
            // itself finds them cached and its time is decode time.
            let batch_prompts: Vec<Vec<Token>> = (0..concurrency)
                .map(|_| prompts.next(context_tokens))
                .collect();
            let mut warmed = Ok(());
            for prompt in &batch_prompts {
                if warmed.is_ok() {
                    let warm = timed(engine.clone(), sweep, prompt.clone(), 1, || {}).await;
                    warmed = warm.map(|_| ());
                }
            }
            let decoding = std::sync::atomic::AtomicU32::new(0);
            let usage = std::sync::Mutex::new(None);
            // Once every request of the batch has its second token, the batch is decoding.
            let all_decoding = || {
                let seen = decoding.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if seen == concurrency {
                    *usage
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = kv_usage();
                }
            };
            let batch = batch_prompts
                .into_iter()
                .map(|prompt| timed(engine.clone(), sweep, prompt, output_tokens, &all_decoding));
            let batch = match warmed {
                Ok(_) => futures::future::join_all(batch)
                    .await
                    .into_iter()
                    .collect::<Result<Vec<_>, _>>(),
                Err(error) => Err(error),
            };
            let batch = match batch {
                Ok(batch) => batch,
                Err(error) if error.class() == ErrorClass::Overloaded => {
                    tracing::info!(
                        context_tokens,
                        concurrency,
                        "left out of the decode table: {error}"
                    );
                    continue;
                }
                Err(error) => return Err(failed(error)),
            };
            let usage = usage
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let itl_ms = batch.iter().map(Times::itl_ms).sum::<f64>() / batch.len() as f64;
            let itl_ms = itl_ms.max(1e-3);
            decode.push(DecodePoint {
                context_tokens,
                concurrency,
                kv_usage: usage.unwrap_or(0.0).clamp(0.0, 1.0),
                itl_ms,
                tokens_per_s: f64::from(concurrency) * 1e3 / itl_ms,
            });
        }
    }
    PerfProfile::new(prefill, decode)
}

/// When one request's tokens came, from its call.
struct Times {
    first_ms: f64,
    last_ms: f64,
    tokens: u32,
}

impl Times {
    /// The mean time between its tokens.
    fn itl_ms(&self) -> f64 {
        (self.last_ms - self.first_ms) / f64::from(self.tokens.saturating_sub(1).max(1))
    }
}

/// Send one request of `prompt` for `tokens` output tokens, ignoring the end of sequence, and
/// call `on_decoding` when its second token comes; when its tokens came.
async fn timed<E>(
    mut engine: E,
    sweep: &LiveSweep,
    prompt: Vec<Token>,
    tokens: u32,
    on_decoding: impl Fn(),
) -> Result<Times, dynamo_core::Error>
where
    E: Engine + Send,
    E::Future: Send,
{
    let mut request =
        GenerateRequest::new("profile", sweep.model.clone(), prompt).with_max_tokens(tokens);
    request.stop = StopConditions {
        ignore_eos: true,
        ..StopConditions::default()
    };
    let called = Instant::now();
    let mut stream = engine.generate(request).await?;
    let (mut first, mut last, mut count) = (None, 0.0, 0);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if chunk.tokens.is_empty() {
            continue;
        }
        let at = called.elapsed().as_secs_f64() * 1e3;
        first.get_or_insert(at);
        last = at;
        let before = count;
        count += chunk.tokens.len() as u32;
        if before < 2 && count >= 2 {
            on_decoding();
        }
    }
    match first {
        Some(first_ms) if count >= tokens => Ok(Times {
            first_ms,
            last_ms: last,
            tokens: count,
        }),
        _ => Err(dynamo_core::Error::Internal {
            message: format!(
                "a request for {tokens} tokens ignoring the end of sequence got {count}"
            ),
            source: None,
        }),
    }
}

/// Fresh prompts: consecutive token ids within a range, never repeating a block's contents
/// until the range wraps.
struct Prompts {
    range: (Token, Token),
    next: Token,
}

impl Prompts {
    fn new(range: (Token, Token)) -> Self {
        let range = (range.0, range.1.max(range.0 + 1));
        Prompts {
            range,
            next: range.0,
        }
    }

    fn next(&mut self, length: u64) -> Vec<Token> {
        let span = self.range.1 - self.range.0;
        (0..length)
            .map(|_| {
                let token = self.next;
                self.next = self.range.0 + (self.next - self.range.0 + 1) % span;
                token
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use dynamo_core::EchoEngine;

    use super::*;

    #[tokio::test]
    async fn with_limits_each_decode_row_ends_at_the_largest_batch_that_fits() {
        let sweep = LiveSweep {
            input_tokens: vec![64],
            context_tokens: vec![128, 1024],
            concurrency: vec![8, 1, 4, 4],
            decode_steps: 4,
            // 132 tokens take 9 blocks: 7 requests fit; 1,028 take 65: none does.
            limits: Some(BatchLimits {
                kv_blocks: 64,
                block_size: 16,
                max_running: 100,
            }),
            ..LiveSweep::new("echo")
        };
        let profile = measure_engine(EchoEngine::new(), &sweep, || None)
            .await
            .expect("a profile");
        let rows: Vec<(u64, u32)> = profile
            .decode()
            .iter()
            .map(|point| (point.context_tokens, point.concurrency))
            .collect();
        assert_eq!(rows, [(128, 1), (128, 4), (128, 7)]);

        // Without limits, the listed batches, each once.
        let listed = LiveSweep {
            limits: None,
            ..sweep
        };
        let profile = measure_engine(EchoEngine::new(), &listed, || None)
            .await
            .expect("a profile");
        assert_eq!(profile.decode().len(), 6);
    }
}
