//! The forward pass over a paged KV cache.
//!
//! A step runs any number of *rows*, each one token of some sequence at some position: the
//! prompt tokens of a prefill, or the last token of each decoding sequence. The matrix products
//! run on all rows at once (candle's quantized kernels); rotary embedding, the KV writes and
//! attention run row by row over the sequence's blocks, which live outside candle in
//! [`KvStore`], so blocks can be shared between sequences and reused across requests.

use candle_core::{DType, Module, Tensor};
use rayon::prelude::*;

use crate::error::CandleError;
use crate::weights::LlamaWeights;
use dynamo_kvbm::BlockId;

/// K and V of every block, for every layer: `[block][layer][kv_head][slot][dim]`.
#[derive(Debug)]
pub struct KvStore {
    keys: Vec<f32>,
    values: Vec<f32>,
    block_size: usize,
    layers: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl KvStore {
    /// Room for `blocks` blocks of `block_size` tokens of `weights`' model.
    pub fn new(weights: &LlamaWeights, blocks: usize, block_size: usize) -> Self {
        let config = weights.config();
        let floats = blocks * block_size * config.kv_floats_per_token();
        KvStore {
            keys: vec![0.0; floats],
            values: vec![0.0; floats],
            block_size,
            layers: config.layers,
            kv_heads: config.kv_heads,
            head_dim: config.head_dim,
        }
    }

    /// Bytes of one block's K and V together: what [`read_block`](Self::read_block) gives and
    /// [`write_block`](Self::write_block) takes.
    pub fn block_bytes(&self) -> usize {
        2 * self.block_floats() * std::mem::size_of::<f32>()
    }

    /// Floats of one block's K (or V): every layer, head, slot and dimension, contiguous.
    fn block_floats(&self) -> usize {
        self.layers * self.kv_heads * self.block_size * self.head_dim
    }

    /// Copy block `block`'s K then V, as f32 in native byte order, into `into`, which is
    /// [`block_bytes`](Self::block_bytes) long. This is what a lower tier keeps of the block.
    ///
    /// # Panics
    ///
    /// When `into` is not [`block_bytes`](Self::block_bytes) long or `block` is not a block of
    /// the store.
    pub fn read_block(&self, block: BlockId, into: &mut [u8]) {
        let floats = self.block_floats();
        let start = block as usize * floats;
        let (keys, values) = into.split_at_mut(floats * std::mem::size_of::<f32>());
        keys.copy_from_slice(bytemuck::cast_slice(&self.keys[start..start + floats]));
        values.copy_from_slice(bytemuck::cast_slice(&self.values[start..start + floats]));
    }

    /// Overwrite block `block`'s K and V with `from`, as [`read_block`](Self::read_block) gave
    /// them.
    ///
    /// # Panics
    ///
    /// As [`read_block`](Self::read_block).
    pub fn write_block(&mut self, block: BlockId, from: &[u8]) {
        let floats = self.block_floats();
        let start = block as usize * floats;
        let (keys, values) = from.split_at(floats * std::mem::size_of::<f32>());
        bytemuck::cast_slice_mut::<f32, u8>(&mut self.keys[start..start + floats])
            .copy_from_slice(keys);
        bytemuck::cast_slice_mut::<f32, u8>(&mut self.values[start..start + floats])
            .copy_from_slice(values);
    }

    /// Where the vector of (block, layer, head, slot) starts.
    fn offset(&self, block: BlockId, layer: usize, head: usize, slot: usize) -> usize {
        (((block as usize * self.layers + layer) * self.kv_heads + head) * self.block_size + slot)
            * self.head_dim
    }
}

/// One token to run: which sequence (an index into the step's block tables) and where.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row {
    pub(crate) token: u32,
    pub(crate) sequence: usize,
    pub(crate) position: usize,
}

/// Rotary tables: `cos[pos][i]`, `sin[pos][i]` for `i < head_dim / 2`.
#[derive(Debug)]
pub(crate) struct Rope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
}

impl Rope {
    pub(crate) fn new(head_dim: usize, theta: f32, positions: usize) -> Self {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for position in 0..positions {
            for i in 0..half {
                let frequency = 1.0 / f64::from(theta).powf(2.0 * i as f64 / head_dim as f64);
                let angle = position as f64 * frequency;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        Rope { cos, sin, half }
    }

    /// Rotate adjacent pairs `(2i, 2i+1)` of one head's vector (GGUF llama's layout).
    fn rotate(&self, vector: &mut [f32], position: usize) {
        let cos = &self.cos[position * self.half..][..self.half];
        let sin = &self.sin[position * self.half..][..self.half];
        for (i, pair) in vector.chunks_exact_mut(2).enumerate() {
            let (x0, x1) = (pair[0], pair[1]);
            pair[0] = x0 * cos[i] - x1 * sin[i];
            pair[1] = x0 * sin[i] + x1 * cos[i];
        }
    }

    pub(crate) fn positions(&self) -> usize {
        self.cos.len() / self.half.max(1)
    }
}

/// The positions a layer's attention must read (over every row and head) before it runs across
/// the thread pool. Below it handing the tasks out costs more than it saves: the chat prompt's
/// decode steps (about 700) ran 9% slower across the pool than on the model thread. At 8,192 a
/// short prompt's steps stay on the model thread, and the decode steps of a 1,024-token context
/// (9,216 and up) go across the pool (docs/engines.md).
pub(crate) const PARALLEL_ATTENTION_WORK: usize = 8192;

/// Run `rows` through the model, writing their K and V into `store` at the blocks that
/// `tables[row.sequence]` lists, and return the logits of the rows listed in `want` (in order).
/// With `parallel`, each layer's attention runs across rayon's thread pool, one task per row
/// and head, when there is enough of it to pay for handing it out
/// ([`PARALLEL_ATTENTION_WORK`]).
///
/// Every sequence's table must cover every position up to its rows' positions; rows of one
/// sequence must come in position order, and every earlier position must already be in the
/// store or among the rows.
pub(crate) fn forward(
    weights: &LlamaWeights,
    rope: &Rope,
    store: &mut KvStore,
    tables: &[&[BlockId]],
    rows: &[Row],
    want: &[usize],
    parallel: bool,
) -> Result<Vec<Vec<f32>>, CandleError> {
    let config = weights.config();
    let (heads, kv_heads, head_dim) = (config.heads, config.kv_heads, config.head_dim);
    let device = &weights.device;
    for row in rows {
        if row.position >= rope.positions() {
            return Err(CandleError::Model(format!(
                "position {} is past the context length {}",
                row.position,
                rope.positions()
            )));
        }
    }
    let ids: Vec<u32> = rows.iter().map(|row| row.token).collect();
    let ids = Tensor::new(ids.as_slice(), device)?;
    let mut x = weights.embeddings.index_select(&ids, 0)?;
    let scale = 1.0 / (head_dim as f32).sqrt();
    // Positions each layer's attention reads, over every row and head.
    let work: usize = rows.iter().map(|row| (row.position + 1) * heads).sum();
    let group = heads / kv_heads;
    let mut scores = Vec::new();
    for (layer_index, layer) in weights.layers.iter().enumerate() {
        let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, config.rms_eps)?;
        let mut q = layer.wq.forward(&h)?.flatten_all()?.to_vec1::<f32>()?;
        let mut k = layer.wk.forward(&h)?.flatten_all()?.to_vec1::<f32>()?;
        let v = layer.wv.forward(&h)?.flatten_all()?.to_vec1::<f32>()?;
        for (r, row) in rows.iter().enumerate() {
            for head in q[r * heads * head_dim..][..heads * head_dim].chunks_exact_mut(head_dim) {
                rope.rotate(head, row.position);
            }
            for head in
                k[r * kv_heads * head_dim..][..kv_heads * head_dim].chunks_exact_mut(head_dim)
            {
                rope.rotate(head, row.position);
            }
            let block = block_of(tables, row, store.block_size)?;
            let slot = row.position % store.block_size;
            for head in 0..kv_heads {
                let at = store.offset(block, layer_index, head, slot);
                let from = (r * kv_heads + head) * head_dim;
                store.keys[at..at + head_dim].copy_from_slice(&k[from..from + head_dim]);
                store.values[at..at + head_dim].copy_from_slice(&v[from..from + head_dim]);
            }
        }
        let mut attended = vec![0.0f32; rows.len() * heads * head_dim];
        let kv: &KvStore = store;
        // Output `index` is row `index / heads`'s head `index % heads`; `scores` is scratch.
        let attend = |index: usize, out: &mut [f32], scores: &mut Vec<f32>| {
            let row = &rows[index / heads];
            let table = tables[row.sequence];
            let kv_head = index % heads / group;
            let query = &q[index * head_dim..][..head_dim];
            scores.clear();
            for position in 0..=row.position {
                let block = table[position / kv.block_size];
                let at = kv.offset(block, layer_index, kv_head, position % kv.block_size);
                scores.push(dot(query, &kv.keys[at..at + head_dim]) * scale);
            }
            softmax(scores);
            for (position, &weight) in scores.iter().enumerate() {
                let block = table[position / kv.block_size];
                let at = kv.offset(block, layer_index, kv_head, position % kv.block_size);
                for (o, &value) in out.iter_mut().zip(&kv.values[at..at + head_dim]) {
                    *o += weight * value;
                }
            }
        };
        if parallel && work >= PARALLEL_ATTENTION_WORK {
            attended
                .par_chunks_mut(head_dim)
                .enumerate()
                .for_each_init(Vec::new, |scores, (index, out)| attend(index, out, scores));
        } else {
            for (index, out) in attended.chunks_mut(head_dim).enumerate() {
                attend(index, out, &mut scores);
            }
        }
        let attended = Tensor::from_vec(attended, (rows.len(), heads * head_dim), device)?;
        x = (x + layer.wo.forward(&attended)?)?;
        let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, config.rms_eps)?;
        let mlp = (candle_nn::ops::silu(&layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?;
        x = (x + layer.down.forward(&mlp)?)?;
    }
    if want.is_empty() {
        return Ok(Vec::new());
    }
    let picked: Vec<u32> = want.iter().map(|&r| r as u32).collect();
    let picked = Tensor::new(picked.as_slice(), device)?;
    let last = x.index_select(&picked, 0)?;
    let last = candle_nn::ops::rms_norm(&last, &weights.output_norm, config.rms_eps)?;
    let logits = weights.output.forward(&last)?.to_dtype(DType::F32)?;
    Ok(logits.to_vec2::<f32>()?)
}

fn block_of(tables: &[&[BlockId]], row: &Row, block_size: usize) -> Result<BlockId, CandleError> {
    tables
        .get(row.sequence)
        .and_then(|table| table.get(row.position / block_size))
        .copied()
        .ok_or_else(|| CandleError::Model(format!("no KV block for position {}", row.position)))
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut sums = [0.0f32; 8];
    let mut a_chunks = a.chunks_exact(8);
    let mut b_chunks = b.chunks_exact(8);
    for (x, y) in (&mut a_chunks).zip(&mut b_chunks) {
        for i in 0..8 {
            sums[i] += x[i] * y[i];
        }
    }
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    sums.iter().sum::<f32>() + tail
}

fn softmax(values: &mut [f32]) {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0.0;
    for value in values.iter_mut() {
        *value = (*value - max).exp();
        total += *value;
    }
    for value in values.iter_mut() {
        *value /= total;
    }
}
