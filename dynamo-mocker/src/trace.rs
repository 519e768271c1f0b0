//! Request traces in the Mooncake format, and their blocks as an engine hashes them.

use std::path::Path;

use dynamo_core::{BlockSize, HashedBlock, LocalBlockHash, SequenceHash};
use serde::Deserialize;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::Error;

/// One request of a trace.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TraceRequest {
    /// Arrival, in ms since the start of the trace.
    pub timestamp: f64,
    /// Prompt length in tokens.
    pub input_length: u64,
    /// Output length in tokens.
    pub output_length: u64,
    /// One id per trace block of the prompt; equal ids mean equal prefix blocks.
    pub hash_ids: Vec<u64>,
}

/// Read a Mooncake trace: one JSON object per line with `timestamp`, `input_length`,
/// `output_length` and `hash_ids`. Blank lines are skipped.
///
/// # Errors
///
/// [`Error::ReadTrace`] or [`Error::ParseTrace`] with the line.
pub fn load_mooncake(path: impl AsRef<Path>) -> Result<Vec<TraceRequest>, Error> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadTrace {
        path: path.display().to_string(),
        source,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|source| Error::ParseTrace {
                line: i + 1,
                source,
            })
        })
        .collect()
}

/// The full engine blocks of a trace request's prompt.
///
/// Each trace block of `trace_block` tokens becomes `trace_block / block_size` engine blocks,
/// whose content hashes are derived from the trace id and the position inside it, so that equal
/// trace ids give equal engine blocks; the chain hashes follow the core's scheme. Only the
/// engine blocks that `input_length` fills are returned.
///
/// # Errors
///
/// [`Error::BlockSizes`] when `trace_block` is not a multiple of `block_size`.
pub fn engine_blocks(
    request: &TraceRequest,
    trace_block: u64,
    block_size: BlockSize,
) -> Result<Vec<HashedBlock>, Error> {
    let engine = u64::from(block_size.get());
    if trace_block == 0 || !trace_block.is_multiple_of(engine) {
        return Err(Error::BlockSizes {
            trace: trace_block,
            engine: block_size,
        });
    }
    let per_trace_block = trace_block / engine;
    let full = (request.input_length / engine).min(request.hash_ids.len() as u64 * per_trace_block);
    let mut parent = None;
    Ok((0..full)
        .map(|j| {
            let id = request.hash_ids[(j / per_trace_block) as usize];
            let local = LocalBlockHash(xxh3_64_with_seed(&(j % per_trace_block).to_le_bytes(), id));
            let sequence = SequenceHash::chain(parent, local);
            parent = Some(sequence);
            HashedBlock { local, sequence }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(ids: &[u64], input: u64) -> TraceRequest {
        TraceRequest {
            timestamp: 0.0,
            input_length: input,
            output_length: 1,
            hash_ids: ids.to_vec(),
        }
    }

    #[test]
    fn equal_trace_prefixes_give_equal_engine_blocks() {
        let size = BlockSize::new(64).unwrap();
        let a = engine_blocks(&request(&[1, 2, 3], 1500), 512, size).unwrap();
        let b = engine_blocks(&request(&[1, 2, 9], 1536), 512, size).unwrap();
        assert_eq!(a.len(), 23, "1500 tokens fill 23 blocks of 64");
        assert_eq!(b.len(), 24);
        assert_eq!(a[..16], b[..16]);
        assert_ne!(a[16], b[16]);
        assert!(engine_blocks(&request(&[1], 512), 500, size).is_err());
    }
}
