//! `dynamo-serve profile`: measure one worker's engine, in this process, and write the
//! performance profile the SLA planners plan from (`dynamo-serve planner --profile FILE`).
//!
//! The engine is the one a `dynamo-serve worker` with the same flags runs (the candle engine by
//! default); `dynamo_planner::perf::measure_engine` sends it the requests and times them on the
//! wall clock, reading its KV usage from the engine while a batch decodes. Each context's
//! decode row ends at the largest batch the engine holds: its KV blocks over each request's,
//! at most the requests it runs at once.

use std::path::PathBuf;

use dynamo_core::{BlockSize, WorkerId};
use dynamo_planner::perf::{BatchLimits, LiveSweep, measure_engine};

use crate::disagg::Part;
use crate::engines;
use crate::options::Options;

/// The sweep of `dynamo-serve profile`.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) out: PathBuf,
    pub(crate) input_tokens: Vec<u64>,
    pub(crate) context_tokens: Vec<u64>,
    pub(crate) concurrency: Vec<u32>,
    pub(crate) decode_steps: u32,
}

pub(crate) async fn run(
    options: &Options,
    settings: &Settings,
) -> Result<(), Box<dyn std::error::Error>> {
    let model_file = engines::model_file(options.model.as_deref()).await?;
    let weights = engines::shared_weights(options, &model_file)?;
    let block_size = BlockSize::new(options.block_size)?;
    let worker = WorkerId::new(0);
    let started = engines::start_engine(
        options,
        weights.as_ref(),
        block_size,
        worker,
        None,
        &Part::default(),
    )?;
    // Each decode row ends at the largest batch the engine holds, as the simulator's
    // profile rows do.
    let kv_blocks = started.load.read().kv_blocks_total;
    let limits = started
        .max_running
        .filter(|_| kv_blocks > 0)
        .map(|max_running| BatchLimits {
            kv_blocks,
            block_size: block_size.get(),
            max_running: u32::try_from(max_running).unwrap_or(u32::MAX),
        });
    let sweep = LiveSweep {
        input_tokens: settings.input_tokens.clone(),
        context_tokens: settings.context_tokens.clone(),
        concurrency: settings.concurrency.clone(),
        limits,
        decode_steps: settings.decode_steps,
        ..LiveSweep::new(options.name.clone())
    };
    tracing::info!(
        "profiling the {} engine: prompts of {:?} tokens, contexts of {:?} at batch sizes {:?} \
         and the largest that fits ({limits:?})",
        options.engine.describe(),
        sweep.input_tokens,
        sweep.context_tokens,
        sweep.concurrency
    );
    let kv_usage = || {
        let reading = started.load.read();
        let (in_use, total) = (reading.kv_blocks_in_use, reading.kv_blocks_total);
        (total > 0).then(|| in_use as f64 / total as f64)
    };
    let profile = measure_engine(started.engine.clone(), &sweep, kv_usage)
        .await?
        .with_engine(options.engine.describe());
    std::fs::write(&settings.out, profile.to_json())
        .map_err(|error| format!("{}: {error}", settings.out.display()))?;
    println!(
        "wrote {} prefill and {} decode points to {}",
        profile.prefill().len(),
        profile.decode().len(),
        settings.out.display()
    );
    for point in profile.prefill() {
        println!(
            "prefill {:>6} tokens: TTFT {:>9.1} ms, {:>9.0} tokens/s",
            point.input_tokens, point.ttft_ms, point.tokens_per_s
        );
    }
    for point in profile.decode() {
        println!(
            "decode  {:>6} context x {:>3}: ITL {:>7.1} ms, {:>7.0} tokens/s, KV {:>5.1}%",
            point.context_tokens,
            point.concurrency,
            point.itl_ms,
            point.tokens_per_s,
            point.kv_usage * 100.0
        );
    }
    Ok(())
}
