//! The shape of a llama-family model, read from its GGUF metadata.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use dynamo_core::{BlockSize, KvLayout};

use crate::error::CandleError;

/// What the forward pass needs to know about a llama-family model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Transformer blocks.
    pub layers: usize,
    /// Width of the residual stream.
    pub hidden: usize,
    /// Attention (query) heads.
    pub heads: usize,
    /// Key/value heads (fewer than `heads` with grouped-query attention).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Rotary embedding base.
    pub rope_theta: f32,
    /// RMS norm epsilon.
    pub rms_eps: f32,
    /// The longest sequence the model was trained for.
    pub context_length: usize,
    /// The end-of-sequence token, if the file names one.
    pub eos_token_id: Option<u32>,
}

impl LlamaConfig {
    /// Read the `llama.*` keys of a GGUF file.
    ///
    /// # Errors
    ///
    /// [`CandleError::Model`] when the architecture is not llama or a key is missing.
    pub fn from_gguf(content: &Content) -> Result<Self, CandleError> {
        let architecture = content
            .metadata
            .get("general.architecture")
            .and_then(|value| value.to_string().ok())
            .map(String::as_str);
        if architecture != Some("llama") {
            return Err(CandleError::Model(format!(
                "only llama-family GGUF files are supported, not {architecture:?}"
            )));
        }
        let number = |key: &str| -> Result<usize, CandleError> {
            content
                .metadata
                .get(key)
                .and_then(as_usize)
                .ok_or_else(|| CandleError::Model(format!("the GGUF metadata lacks {key}")))
        };
        let float = |key: &str, default: f32| -> f32 {
            content
                .metadata
                .get(key)
                .and_then(|value| value.to_f32().ok())
                .unwrap_or(default)
        };
        let hidden = number("llama.embedding_length")?;
        let heads = number("llama.attention.head_count")?;
        if heads == 0 || hidden % heads != 0 {
            return Err(CandleError::Model(format!(
                "{heads} heads do not divide the hidden width {hidden}"
            )));
        }
        let kv_heads = number("llama.attention.head_count_kv").unwrap_or(heads);
        if kv_heads == 0 || heads % kv_heads != 0 {
            return Err(CandleError::Model(format!(
                "{kv_heads} key/value heads do not divide {heads} heads"
            )));
        }
        Ok(LlamaConfig {
            layers: number("llama.block_count")?,
            hidden,
            heads,
            kv_heads,
            head_dim: hidden / heads,
            rope_theta: float("llama.rope.freq_base", 10_000.0),
            rms_eps: float("llama.attention.layer_norm_rms_epsilon", 1e-5),
            context_length: number("llama.context_length").unwrap_or(4096),
            eos_token_id: number("tokenizer.ggml.eos_token_id")
                .ok()
                .and_then(|id| u32::try_from(id).ok()),
        })
    }

    /// Floats of K (or of V) that one token occupies across all layers.
    pub fn kv_floats_per_token(&self) -> usize {
        self.layers * self.kv_heads * self.head_dim
    }

    /// Read the shape of the model in the GGUF file at `path`, without its tensors.
    ///
    /// # Errors
    ///
    /// I/O errors, a file that is not GGUF, or as [`from_gguf`](Self::from_gguf).
    pub fn read(path: impl AsRef<Path>) -> Result<Self, CandleError> {
        let mut file = BufReader::new(File::open(path)?);
        LlamaConfig::from_gguf(&Content::read(&mut file)?)
    }

    /// The layout of the KV blocks a candle engine of this model keeps (`f32` K and V),
    /// named `model`: what disaggregated workers compare before they hand blocks over.
    ///
    /// ```no_run
    /// use dynamo_candle::LlamaConfig;
    /// use dynamo_core::BlockSize;
    ///
    /// let config = LlamaConfig::read("SmolLM2-135M-Instruct-Q4_1.gguf")?;
    /// let layout = config.kv_layout("smollm2", BlockSize::new(16)?);
    /// assert_eq!(layout.block_bytes(), 737_280);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn kv_layout(&self, model: impl Into<String>, block_size: BlockSize) -> KvLayout {
        let as_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        KvLayout::new(
            model,
            block_size.get(),
            as_u32(self.layers),
            as_u32(self.kv_heads),
            as_u32(self.head_dim),
            "f32",
        )
    }
}

fn as_usize(value: &Value) -> Option<usize> {
    let wide = match value {
        Value::U8(v) => u64::from(*v),
        Value::U16(v) => u64::from(*v),
        Value::U32(v) => u64::from(*v),
        Value::U64(v) => *v,
        Value::I32(v) => u64::try_from(*v).ok()?,
        Value::I64(v) => u64::try_from(*v).ok()?,
        _ => return None,
    };
    usize::try_from(wide).ok()
}
