//! The model file and the engines built on it, shared by the single-process job and the
//! worker process.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dynamo_candle::{CandleConfig, CandleEngine, LlamaWeights};
use dynamo_core::{BlockSize, BoxEngine, EchoEngine, EngineExt, KvEvent, KvPublisher, WorkerId};
use dynamo_mocker::{EngineConfig, LiveConfig, LiveEngine, PolynomialTiming};
use dynamo_openai::WorkerGauges;
use tokio::sync::mpsc;

use crate::disagg::Part;
use crate::options::{EngineKind, Options};
use crate::progress::Download;

/// The GGUF file `--model` names: a local path, a Hugging Face Hub file (fetched once), or by
/// default SmolLM2-135M-Instruct from the cache.
pub(crate) async fn model_file(
    model: Option<&Path>,
) -> Result<PathBuf, Box<dyn std::error::Error>> {
    match model {
        Some(path) if path.exists() => Ok(path.to_path_buf()),
        Some(spec) => {
            let spec = spec.to_string_lossy().into_owned();
            let Some(file) = dynamo_assets::HubFile::parse(&spec) else {
                return Err(format!(
                    "--model {spec}: no such file, and not a Hugging Face Hub file (ORG/REPO/FILE)"
                )
                .into());
            };
            let mut download = Download::new(format!("{spec} from the Hugging Face Hub"));
            let fetched = tokio::task::spawn_blocking(move || {
                let fetched = file.fetch_with_progress(&mut |progress| download.update(progress));
                download.finish();
                fetched
            });
            Ok(fetched.await??)
        }
        None => {
            let cache = dynamo_assets::cache_dir()?;
            let file = dynamo_assets::SMOLLM2_135M_INSTRUCT;
            let mut download = Download::new(format!(
                "{} once into {}",
                file.cached_name,
                cache.join("models").display()
            ));
            let fetched = tokio::task::spawn_blocking(move || {
                let fetched =
                    file.fetch_with_progress(&cache, &mut |progress| download.update(progress));
                download.finish();
                fetched
            });
            Ok(fetched.await??)
        }
    }
}

/// The weights candle workers share, loaded once; `None` for the other engines.
pub(crate) fn shared_weights(
    options: &Options,
    model_file: &Path,
) -> Result<Option<LlamaWeights>, Box<dyn std::error::Error>> {
    Ok(match options.engine {
        EngineKind::Candle => Some(LlamaWeights::load(model_file, &candle_core::Device::Cpu)?),
        EngineKind::Mocker | EngineKind::Echo => None,
    })
}

/// A started engine, and what it can say about its load.
pub(crate) struct Started {
    pub(crate) engine: BoxEngine,
    pub(crate) load: LoadProbe,
    /// Requests the engine runs at once (none for an engine without a limit).
    pub(crate) max_running: Option<usize>,
}

/// Where an engine's queue and KV usage can be read.
pub(crate) enum LoadProbe {
    Candle(CandleEngine),
    Mocker(LiveEngine),
    Nothing,
}

impl LoadProbe {
    /// The publisher of the engine's KV events, which answers resync requests.
    pub(crate) fn kv_publisher(&self) -> Option<KvPublisher> {
        match self {
            LoadProbe::Candle(engine) => Some(engine.kv_publisher().clone()),
            LoadProbe::Mocker(engine) => Some(engine.kv_publisher().clone()),
            LoadProbe::Nothing => None,
        }
    }

    /// What the engine says of its load now.
    pub(crate) fn read(&self) -> EngineReading {
        match self {
            LoadProbe::Candle(engine) => {
                let counters = engine.counters();
                EngineReading {
                    waiting_requests: engine.waiting_requests() as u64,
                    kv_blocks_in_use: counters.in_use as u64,
                    kv_blocks_total: counters.capacity as u64,
                    preemptions: engine.preemptions(),
                }
            }
            LoadProbe::Mocker(engine) => {
                let metrics = engine.metrics();
                EngineReading {
                    waiting_requests: metrics.waiting as u64,
                    kv_blocks_in_use: metrics.blocks_in_use,
                    kv_blocks_total: metrics.blocks_total,
                    preemptions: metrics.preemptions,
                }
            }
            LoadProbe::Nothing => EngineReading::default(),
        }
    }
}

/// An engine's load, as [`LoadProbe::read`] finds it (zeros for an engine that keeps no queue
/// or cache).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct EngineReading {
    /// Requests queued, not started.
    pub(crate) waiting_requests: u64,
    /// KV blocks held by running requests.
    pub(crate) kv_blocks_in_use: u64,
    /// KV blocks in the cache.
    pub(crate) kv_blocks_total: u64,
    /// Sequences preempted since the engine started.
    pub(crate) preemptions: u64,
}

impl EngineReading {
    /// Set `worker`'s series of this reading on the gateway's `/metrics`: three gauges and the
    /// preemptions as a counter, kept in [`WorkerGauges`] so that they can leave with the
    /// worker.
    pub(crate) fn show(&self, worker: &str) {
        let gauges = WorkerGauges::global();
        let values = [
            self.waiting_requests,
            self.kv_blocks_in_use,
            self.kv_blocks_total,
        ];
        for (name, value) in READING_GAUGES.into_iter().zip(values) {
            gauges.set(name, worker, value as f64);
        }
        gauges.set_total(PREEMPTIONS, worker, self.preemptions as f64);
    }
}

/// The gauges of an [`EngineReading`] on `/metrics`, by `worker`.
const READING_GAUGES: [&str; 3] = [
    "dynamo_worker_waiting_requests",
    "dynamo_worker_kv_blocks_in_use",
    "dynamo_worker_kv_blocks_total",
];

/// The counter of an [`EngineReading`]'s preemptions on `/metrics`, by `worker`.
const PREEMPTIONS: &str = "dynamo_worker_preemptions_total";

/// How often the single process reads its own workers' engines for `/metrics`.
const SHOW_EVERY: Duration = Duration::from_secs(1);

/// Show the single process's own workers' engine readings on its `/metrics`, every second,
/// as a frontend shows its workers' load reports.
pub(crate) async fn show_readings(probes: Vec<(WorkerId, LoadProbe)>) {
    // An engine that keeps no queue or cache (echo) has nothing to show.
    let workers: Vec<(String, LoadProbe)> = probes
        .into_iter()
        .filter(|(_, probe)| !matches!(probe, LoadProbe::Nothing))
        .map(|(worker, probe)| (worker.to_string(), probe))
        .collect();
    let mut ticks = tokio::time::interval(SHOW_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        for (worker, probe) in &workers {
            probe.read().show(worker);
        }
    }
}

/// Start one worker's engine, writing its KV events to `events`, in its `part` of
/// disaggregated serving.
pub(crate) fn start_engine(
    options: &Options,
    weights: Option<&LlamaWeights>,
    block_size: BlockSize,
    worker: WorkerId,
    events: Option<mpsc::Sender<KvEvent>>,
    part: &Part,
) -> Result<Started, Box<dyn std::error::Error>> {
    Ok(match (options.engine, weights) {
        (EngineKind::Candle, Some(weights)) => {
            let config = CandleConfig {
                blocks: options.kv_blocks.unwrap_or(CandleConfig::default().blocks),
                block_size,
                worker,
                host_blocks: options.host_cache_blocks,
                disk: options.disk_cache.clone(),
                export: part.export.clone(),
                fetch: part.fetch.clone(),
                max_running: options
                    .max_running
                    .unwrap_or(CandleConfig::default().max_running),
                ..CandleConfig::default()
            };
            let max_running = config.max_running;
            let engine = CandleEngine::start(weights.clone(), config, events)?;
            Started {
                engine: engine.clone().boxed_engine(),
                load: LoadProbe::Candle(engine),
                max_running: Some(max_running),
            }
        }
        (EngineKind::Candle, None) => return Err("the candle engine needs the weights".into()),
        (EngineKind::Echo, _) => Started {
            engine: EchoEngine::new().repeating().boxed_engine(),
            load: LoadProbe::Nothing,
            max_running: None,
        },
        (EngineKind::Mocker, _) => {
            let config = LiveConfig {
                engine: EngineConfig {
                    num_gpu_blocks: options.kv_blocks.map_or(16_384, u64::from),
                    block_size,
                    max_num_seqs: options
                        .max_running
                        .unwrap_or(EngineConfig::default().max_num_seqs),
                    ..EngineConfig::default()
                },
                speedup: options.speedup,
                worker,
                ..LiveConfig::default()
            };
            let max_running = config.engine.max_num_seqs;
            let (engine, run) = LiveEngine::new(config, PolynomialTiming::default(), events);
            tokio::spawn(run);
            Started {
                engine: engine.clone().boxed_engine(),
                load: LoadProbe::Mocker(engine),
                max_running: Some(max_running),
            }
        }
    })
}
