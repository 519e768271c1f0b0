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

/// Read an Azure LLM inference trace (the 2023 CSVs: `TIMESTAMP,ContextTokens,GeneratedTokens`
/// with timestamps such as `2023-11-16 18:17:03.9799600`) as a Mooncake trace: timestamps in
/// ms after the first row's, and `ceil(ContextTokens / block_tokens)` fresh `hash_ids` per
/// request, shared with no other request (the trace has no prefixes).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = std::env::temp_dir().join(format!("azure-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("trace.csv");
/// std::fs::write(
///     &path,
///     "TIMESTAMP,ContextTokens,GeneratedTokens\n\
///      2023-11-16 23:59:59.5000000,1000,10\n\
///      2023-11-17 00:00:00.2500000,512,3\n",
/// )?;
/// let trace = dynamo_mocker::load_azure(&path, 512)?;
/// assert_eq!(trace[1].timestamp, 750.0);
/// assert_eq!((trace[0].input_length, trace[0].output_length), (1000, 10));
/// assert_eq!(trace[0].hash_ids, [0, 1]);
/// assert_eq!(trace[1].hash_ids, [2]);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::ReadTrace`], or [`Error::ParseCsv`] with the line.
pub fn load_azure(path: impl AsRef<Path>, block_tokens: u64) -> Result<Vec<TraceRequest>, Error> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadTrace {
        path: path.display().to_string(),
        source,
    })?;
    let block_tokens = block_tokens.max(1);
    let mut next_id = 0u64;
    let mut first_ms = None;
    let mut trace = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (i == 0 && line.starts_with("TIMESTAMP")) {
            continue;
        }
        let bad = |reason: &str| Error::ParseCsv {
            line: i + 1,
            reason: reason.to_owned(),
        };
        let mut fields = line.split(',').map(str::trim);
        let (Some(time), Some(context), Some(generated)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(bad("it needs TIMESTAMP, ContextTokens and GeneratedTokens"));
        };
        let at_ms = timestamp_ms(time)
            .ok_or_else(|| bad("the timestamp is not YYYY-MM-DD HH:MM:SS.fff"))?;
        let input: u64 = context
            .parse()
            .map_err(|_| bad("ContextTokens is not a count"))?;
        let output: u64 = generated
            .parse()
            .map_err(|_| bad("GeneratedTokens is not a count"))?;
        let first = *first_ms.get_or_insert(at_ms);
        let blocks = input.div_ceil(block_tokens);
        trace.push(TraceRequest {
            timestamp: at_ms - first,
            input_length: input,
            output_length: output,
            hash_ids: (next_id..next_id + blocks).collect(),
        });
        next_id += blocks;
    }
    Ok(trace)
}

/// `YYYY-MM-DD HH:MM:SS[.fraction]` in ms since 1970-01-01 (proleptic Gregorian, no zone).
fn timestamp_ms(text: &str) -> Option<f64> {
    let (date, time) = text.split_once([' ', 'T'])?;
    let mut date = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let mut time = time.split(':');
    let hours: f64 = time.next()?.parse().ok()?;
    let minutes: f64 = time.next()?.parse().ok()?;
    let seconds: f64 = time.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days as f64 * 24.0 + hours) * 60.0 + minutes) * 60_000.0 + seconds * 1000.0)
}

/// Read a trace by its file name: an Azure CSV ([`load_azure`], `block_tokens` per hash id)
/// when it ends in `.csv`, a Mooncake trace ([`load_mooncake`]) otherwise.
///
/// # Errors
///
/// As [`load_azure`] and [`load_mooncake`].
pub fn load_trace(path: impl AsRef<Path>, block_tokens: u64) -> Result<Vec<TraceRequest>, Error> {
    let path = path.as_ref();
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        load_azure(path, block_tokens)
    } else {
        load_mooncake(path)
    }
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
    fn azure_timestamps_read_as_ms() {
        let at = |t| timestamp_ms(t).expect("a timestamp");
        assert_eq!(at("1970-01-01 00:00:01.5"), 1500.0);
        assert_eq!(
            at("2023-11-17 00:00:00") - at("2023-11-16 23:59:59.9"),
            100.0
        );
        assert_eq!(
            at("2024-03-01 00:00:00") - at("2024-02-28 00:00:00"),
            2.0 * 86_400_000.0
        );
        assert_eq!(timestamp_ms("2023-13-01 00:00:00"), None);
        assert_eq!(timestamp_ms("yesterday"), None);
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
