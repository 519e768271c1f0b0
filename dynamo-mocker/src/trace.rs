//! Request traces in the Mooncake format, and their blocks as an engine hashes them.

use std::path::Path;

use dynamo_core::{BlockSize, HashedBlock, LocalBlockHash, SequenceHash};
use serde::Deserialize;
use xxhash_rust::xxh3::xxh3_64_with_seed;

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

/// Why a trace could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The file could not be read.
    #[error("cannot read the trace {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A line is not a trace request.
    #[error("line {line} of the trace is not a request: {source}")]
    Parse {
        /// The 1-based line number.
        line: usize,
        /// The cause.
        source: serde_json::Error,
    },
    /// The trace's block size is not a multiple of the engine's.
    #[error("a trace block of {trace} tokens cannot be cut into engine blocks of {engine}")]
    BlockSizes {
        /// The trace's block size.
        trace: u64,
        /// The engine's block size.
        engine: BlockSize,
    },
}

/// Read a Mooncake trace: one JSON object per line with `timestamp`, `input_length`,
/// `output_length` and `hash_ids`. Blank lines are skipped.
///
/// # Errors
///
/// [`TraceError::Read`] or [`TraceError::Parse`] with the line.
pub fn load_mooncake(path: impl AsRef<Path>) -> Result<Vec<TraceRequest>, TraceError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| TraceError::Read {
        path: path.display().to_string(),
        source,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|source| TraceError::Parse {
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
/// [`TraceError::BlockSizes`] when `trace_block` is not a multiple of `block_size`.
pub fn engine_blocks(
    request: &TraceRequest,
    trace_block: u64,
    block_size: BlockSize,
) -> Result<Vec<HashedBlock>, TraceError> {
    let engine = u64::from(block_size.get());
    if trace_block == 0 || !trace_block.is_multiple_of(engine) {
        return Err(TraceError::BlockSizes {
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
