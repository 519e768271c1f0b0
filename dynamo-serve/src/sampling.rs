//! `--sampling-defaults`: the sampling of requests that give no temperature or top_p.

use dynamo_assets::{RecommendedSampling, SMOLLM2_135M_INSTRUCT_SAMPLING};
use dynamo_openai::{GgufMetadata, GgufValue, SamplingDefaults};

use crate::options::{Options, SamplingSource};

/// The gateway's sampling defaults for the model, as `--sampling-defaults` asks; logged.
pub(crate) fn defaults(options: &Options, metadata: &GgufMetadata) -> SamplingDefaults {
    let Some(sampling) = recommended(options, metadata) else {
        tracing::info!("requests that give no temperature or top_p leave them to the engine");
        return SamplingDefaults::default();
    };
    let settings: Vec<String> = [
        sampling
            .temperature
            .map(|value| format!("temperature {value}")),
        sampling.top_p.map(|value| format!("top_p {value}")),
        sampling.top_k.map(|value| format!("top_k {value}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    tracing::info!(
        "requests that give no temperature or top_p get the model's recommended {}",
        settings.join(", ")
    );
    SamplingDefaults {
        temperature: sampling.temperature,
        top_p: sampling.top_p,
        top_k: sampling.top_k,
    }
}

/// The sampling `--sampling-defaults` asks for: with `model`, the embedded model's
/// recommendation, or for a `--model` file the one its GGUF metadata carries (`None` when it
/// carries none); with `none`, nothing.
pub(crate) fn recommended(
    options: &Options,
    metadata: &GgufMetadata,
) -> Option<RecommendedSampling> {
    match (options.sampling_defaults, &options.model) {
        (SamplingSource::Off, _) => None,
        (SamplingSource::Model, None) => Some(SMOLLM2_135M_INSTRUCT_SAMPLING),
        (SamplingSource::Model, Some(_)) => from_gguf(metadata),
    }
}

/// The sampling a GGUF file recommends in llama.cpp's `general.sampling.*` keys (written by
/// its converter from a model's `generation_config.json`), if any.
fn from_gguf(metadata: &GgufMetadata) -> Option<RecommendedSampling> {
    let number = |key: &str| match metadata.get(key)? {
        GgufValue::Float(value) => Some(*value as f32),
        GgufValue::Uint(value) => Some(*value as f32),
        GgufValue::Int(value) => Some(*value as f32),
        _ => None,
    };
    let sampling = RecommendedSampling {
        temperature: number("general.sampling.temp").filter(|&value| value >= 0.0),
        top_p: number("general.sampling.top_p").filter(|&value| value > 0.0 && value <= 1.0),
        // 0 and -1 mean no top-k.
        top_k: metadata
            .get("general.sampling.top_k")
            .and_then(GgufValue::as_u64)
            .and_then(|value| u32::try_from(value).ok())
            .filter(|&value| value > 0),
    };
    (sampling != RecommendedSampling::default()).then_some(sampling)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF header with these metadata and no tensors.
    fn metadata(entries: &[(&str, GgufValue)]) -> GgufMetadata {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend(0u64.to_le_bytes());
        bytes.extend((entries.len() as u64).to_le_bytes());
        for (key, value) in entries {
            bytes.extend((key.len() as u64).to_le_bytes());
            bytes.extend(key.as_bytes());
            match value {
                GgufValue::Float(value) => {
                    bytes.extend(6u32.to_le_bytes());
                    bytes.extend((*value as f32).to_le_bytes());
                }
                GgufValue::Int(value) => {
                    bytes.extend(5u32.to_le_bytes());
                    bytes.extend((*value as i32).to_le_bytes());
                }
                GgufValue::String(text) => {
                    bytes.extend(8u32.to_le_bytes());
                    bytes.extend((text.len() as u64).to_le_bytes());
                    bytes.extend(text.as_bytes());
                }
                other => panic!("not written by this test: {other:?}"),
            }
        }
        GgufMetadata::read(&mut bytes.as_slice()).expect("a GGUF header")
    }

    fn options(args: &str) -> Options {
        Options::try_parse_from(std::iter::once("dynamo-serve").chain(args.split_whitespace()))
            .expect("valid")
    }

    #[test]
    fn the_embedded_model_is_sampled_as_its_card_recommends() {
        let none = metadata(&[]);
        let sampling = recommended(&options(""), &none).expect("a recommendation");
        assert_eq!(
            (sampling.temperature, sampling.top_p, sampling.top_k),
            (Some(0.2), Some(0.9), None)
        );
        assert_eq!(
            recommended(&options("--sampling-defaults none"), &none),
            None
        );
    }

    #[test]
    fn a_model_file_recommends_what_its_metadata_says_or_nothing() {
        let file = options("--model other.gguf");
        let plain = metadata(&[("general.name", GgufValue::String("plain".to_owned()))]);
        assert_eq!(recommended(&file, &plain), None);

        let tuned = metadata(&[
            ("general.sampling.temp", GgufValue::Float(0.6)),
            ("general.sampling.top_p", GgufValue::Float(0.95)),
            ("general.sampling.top_k", GgufValue::Int(20)),
        ]);
        let sampling = recommended(&file, &tuned).expect("a recommendation");
        assert_eq!(
            (sampling.temperature, sampling.top_p, sampling.top_k),
            (Some(0.6), Some(0.95), Some(20))
        );
        let off = options("--model other.gguf --sampling-defaults none");
        assert_eq!(recommended(&off, &tuned), None);

        let no_top_k = metadata(&[("general.sampling.top_k", GgufValue::Int(-1))]);
        assert_eq!(recommended(&file, &no_top_k), None);
    }
}
