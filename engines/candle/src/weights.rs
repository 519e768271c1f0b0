//! The weights of a llama-family model, loaded from a GGUF file.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Device, Tensor};

use crate::config::LlamaConfig;
use crate::error::CandleError;
use crate::vocab::{self, Vocabulary};

/// One transformer block.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub(crate) attn_norm: Tensor,
    pub(crate) wq: QMatMul,
    pub(crate) wk: QMatMul,
    pub(crate) wv: QMatMul,
    pub(crate) wo: QMatMul,
    pub(crate) ffn_norm: Tensor,
    pub(crate) gate: QMatMul,
    pub(crate) up: QMatMul,
    pub(crate) down: QMatMul,
}

/// All the weights of a model.
///
/// Cloning is cheap (the tensors are shared): load once, then give each worker a clone.
#[derive(Debug, Clone)]
pub struct LlamaWeights {
    pub(crate) config: LlamaConfig,
    /// Dequantized token embeddings, `(vocab, hidden)`.
    pub(crate) embeddings: Tensor,
    pub(crate) layers: Vec<Layer>,
    pub(crate) output_norm: Tensor,
    /// The output projection (the token embeddings when the model ties them).
    pub(crate) output: QMatMul,
    pub(crate) device: Device,
    /// The bytes of every token, for output formats.
    pub(crate) vocabulary: Vocabulary,
}

impl LlamaWeights {
    /// Load a llama-family GGUF file onto `device`, with the matrices dequantized to `f32`.
    ///
    /// candle's quantized kernels quantize the activations too (to 8 bits), which costs a small
    /// model like SmolLM2-135M its answers: greedy decoding of "What is the capital of France?"
    /// gives "The capital of France is Paris." with `f32` matrices and a wrong answer with
    /// quantized ones. On this machine `f32` is also the faster of the two for a 135M model;
    /// it takes about four times the memory (540 MB for SmolLM2-135M instead of 98 MB).
    ///
    /// # Errors
    ///
    /// I/O errors, a file that is not GGUF, or a model that is not llama-family.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self, CandleError> {
        Self::load_with(path.as_ref(), device, Matrices::Dequantized)
    }

    /// Load a llama-family GGUF file onto `device`, keeping quantized matrices quantized (less
    /// memory; see [`LlamaWeights::load`] for what it costs).
    ///
    /// # Errors
    ///
    /// As [`LlamaWeights::load`].
    pub fn load_quantized(path: impl AsRef<Path>, device: &Device) -> Result<Self, CandleError> {
        Self::load_with(path.as_ref(), device, Matrices::Quantized)
    }

    fn load_with(path: &Path, device: &Device, matrices: Matrices) -> Result<Self, CandleError> {
        let mut reader = BufReader::new(File::open(path)?);
        let content = Content::read(&mut reader)?;
        let config = LlamaConfig::from_gguf(&content)?;
        let vocabulary = Vocabulary(vocab::from_gguf(&content));
        let mut file = GgufFile {
            content: &content,
            reader: &mut reader,
            device,
            matrices,
        };
        let token_embd = file.tensor("token_embd.weight")?;
        let embeddings = token_embd.dequantize(device)?;
        let output = if content.tensor_infos.contains_key("output.weight") {
            file.tensor("output.weight")?
        } else {
            token_embd
        };
        let output_norm = file.vector("output_norm.weight")?;
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let name = |part: &str| format!("blk.{i}.{part}.weight");
            layers.push(Layer {
                attn_norm: file.vector(&name("attn_norm"))?,
                wq: file.matrix(&name("attn_q"))?,
                wk: file.matrix(&name("attn_k"))?,
                wv: file.matrix(&name("attn_v"))?,
                wo: file.matrix(&name("attn_output"))?,
                ffn_norm: file.vector(&name("ffn_norm"))?,
                gate: file.matrix(&name("ffn_gate"))?,
                up: file.matrix(&name("ffn_up"))?,
                down: file.matrix(&name("ffn_down"))?,
            });
        }
        Ok(LlamaWeights {
            config,
            embeddings,
            layers,
            output_norm,
            output: file.to_matrix(output)?,
            device: device.clone(),
            vocabulary,
        })
    }

    /// The model's shape.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// How many token ids the model knows.
    pub fn vocab_size(&self) -> usize {
        self.embeddings.dims().first().copied().unwrap_or(0)
    }
}

/// How matrices are kept in memory.
#[derive(Debug, Clone, Copy)]
enum Matrices {
    Quantized,
    Dequantized,
}

/// Reads named tensors out of an open GGUF file.
struct GgufFile<'a, R> {
    content: &'a Content,
    reader: &'a mut R,
    device: &'a Device,
    matrices: Matrices,
}

impl<R: std::io::Read + std::io::Seek> GgufFile<'_, R> {
    fn tensor(&mut self, name: &str) -> Result<QTensor, CandleError> {
        Ok(self.content.tensor(self.reader, name, self.device)?)
    }

    fn matrix(&mut self, name: &str) -> Result<QMatMul, CandleError> {
        let tensor = self.tensor(name)?;
        self.to_matrix(tensor)
    }

    fn to_matrix(&self, tensor: QTensor) -> Result<QMatMul, CandleError> {
        Ok(match self.matrices {
            Matrices::Quantized => QMatMul::from_qtensor(tensor)?,
            Matrices::Dequantized => QMatMul::Tensor(tensor.dequantize(self.device)?),
        })
    }

    fn vector(&mut self, name: &str) -> Result<Tensor, CandleError> {
        Ok(self.tensor(name)?.dequantize(self.device)?)
    }
}
