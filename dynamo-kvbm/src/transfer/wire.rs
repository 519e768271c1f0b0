//! The block server's wire format: fixed little-endian headers and raw block bytes.
//!
//! A request is a 16-byte header, `b"KV"`, version `1`, the op (`1` fetch, `2` release), the
//! block count (`u32`) and the transfer id (`u64`), followed by `count` sequence hashes (`u64`
//! each). An answer is a 12-byte header, `b"KV"`, version `1`, a status, a `u32` (blocks found,
//! or the server's largest request when the status is "too large") and the server's block size
//! (`u32`), followed by the found blocks' bytes. Every integer is little-endian.
//!
//! Op `3` (stage, for a NIXL READ) asks the server to copy the listed blocks into its
//! NIXL-registered slab; its answer's body is the server agent's metadata (a `u32` length, then
//! the bytes) and one `u64` address per found block. A server without NIXL answers status `4`
//! (unsupported) and keeps the connection; a server from before op `3` answers "malformed" and
//! closes it. Version 1 peers that never send op `3` see no change.

use bytes::{Buf, BufMut};
use dynamo_core::SequenceHash;
use tokio::io::{AsyncRead, AsyncReadExt};

const MAGIC: [u8; 2] = *b"KV";
const VERSION: u8 = 1;
/// Bytes of a request header.
pub(crate) const REQUEST_HEADER: usize = 16;
/// Bytes of an answer header.
pub(crate) const ANSWER_HEADER: usize = 12;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Send the leading blocks of the listed hashes that the transfer still has.
    Fetch,
    /// End the transfer.
    Release,
    /// Copy the leading blocks into the server's NIXL slab and say where they are.
    Stage,
}

/// A request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) op: Op,
    pub(crate) transfer: u64,
    /// How many hashes follow.
    pub(crate) count: u32,
}

/// How a server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Done: `found` blocks follow (fetch), or `found` is 1 when the transfer was released.
    Ok,
    /// The transfer is not live.
    UnknownTransfer,
    /// The request listed more blocks than the server sends at once; `found` is its limit.
    TooLarge,
    /// The request could not be read; the server closes the connection.
    Malformed,
    /// The server does not serve this op (a stage where it has no NIXL).
    Unsupported,
}

/// An answer header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) status: Status,
    pub(crate) found: u32,
    pub(crate) block_bytes: u32,
}

impl Request {
    /// The header followed by `hashes`.
    pub(crate) fn encode(op: Op, transfer: u64, hashes: &[SequenceHash], into: &mut Vec<u8>) {
        into.put_slice(&MAGIC);
        into.put_u8(VERSION);
        into.put_u8(match op {
            Op::Fetch => 1,
            Op::Release => 2,
            Op::Stage => 3,
        });
        into.put_u32_le(u32::try_from(hashes.len()).unwrap_or(u32::MAX));
        into.put_u64_le(transfer);
        for hash in hashes {
            into.put_u64_le(hash.0);
        }
    }

    /// A header; `None` when it is not one.
    pub(crate) fn decode(header: [u8; REQUEST_HEADER]) -> Option<Request> {
        let mut buf = &header[..];
        let mut magic = [0; 2];
        buf.copy_to_slice(&mut magic);
        if magic != MAGIC || buf.get_u8() != VERSION {
            return None;
        }
        let op = match buf.get_u8() {
            1 => Op::Fetch,
            2 => Op::Release,
            3 => Op::Stage,
            _ => return None,
        };
        let count = buf.get_u32_le();
        let transfer = buf.get_u64_le();
        Some(Request {
            op,
            transfer,
            count,
        })
    }
}

impl Answer {
    pub(crate) fn encode(self) -> [u8; ANSWER_HEADER] {
        let mut header = [0; ANSWER_HEADER];
        let mut buf = &mut header[..];
        buf.put_slice(&MAGIC);
        buf.put_u8(VERSION);
        buf.put_u8(match self.status {
            Status::Ok => 0,
            Status::UnknownTransfer => 1,
            Status::TooLarge => 2,
            Status::Malformed => 3,
            Status::Unsupported => 4,
        });
        buf.put_u32_le(self.found);
        buf.put_u32_le(self.block_bytes);
        header
    }

    /// A header; `None` when it is not one.
    pub(crate) fn decode(header: [u8; ANSWER_HEADER]) -> Option<Answer> {
        let mut buf = &header[..];
        let mut magic = [0; 2];
        buf.copy_to_slice(&mut magic);
        if magic != MAGIC || buf.get_u8() != VERSION {
            return None;
        }
        let status = match buf.get_u8() {
            0 => Status::Ok,
            1 => Status::UnknownTransfer,
            2 => Status::TooLarge,
            3 => Status::Malformed,
            4 => Status::Unsupported,
            _ => return None,
        };
        Some(Answer {
            status,
            found: buf.get_u32_le(),
            block_bytes: buf.get_u32_le(),
        })
    }
}

#[cfg(feature = "nixl")]
/// The body of a stage answer: the agent's `metadata` and the staged blocks' `addresses`.
pub(crate) fn encode_staged(metadata: &[u8], addresses: &[u64], into: &mut Vec<u8>) {
    into.put_u32_le(u32::try_from(metadata.len()).unwrap_or(u32::MAX));
    into.put_slice(metadata);
    for address in addresses {
        into.put_u64_le(*address);
    }
}

#[cfg(feature = "nixl")]
/// The most metadata bytes a client accepts in a stage answer.
pub(crate) const MAX_METADATA: usize = 1 << 20;

#[cfg(feature = "nixl")]
/// Read a stage answer's body for `found` blocks: the metadata and the addresses; `None` when
/// the metadata is longer than [`MAX_METADATA`].
pub(crate) async fn read_staged<R: AsyncRead + Unpin>(
    reader: &mut R,
    found: usize,
) -> std::io::Result<Option<(Vec<u8>, Vec<u64>)>> {
    let len = reader.read_u32_le().await? as usize;
    if len > MAX_METADATA {
        return Ok(None);
    }
    let mut metadata = vec![0; len];
    reader.read_exact(&mut metadata).await?;
    let mut addresses = Vec::with_capacity(found);
    for _ in 0..found {
        addresses.push(reader.read_u64_le().await?);
    }
    Ok(Some((metadata, addresses)))
}

/// Read `count` hashes into `into` (cleared first), through `scratch`.
pub(crate) async fn read_hashes<R: AsyncRead + Unpin>(
    reader: &mut R,
    count: usize,
    scratch: &mut Vec<u8>,
    into: &mut Vec<SequenceHash>,
) -> std::io::Result<()> {
    scratch.resize(count * 8, 0);
    reader.read_exact(scratch).await?;
    into.clear();
    let mut buf = &scratch[..];
    while buf.has_remaining() {
        into.push(SequenceHash(buf.get_u64_le()));
    }
    Ok(())
}

/// How many blocks of `block_bytes` one request asks for, for requests of about `chunk_bytes`:
/// at least one.
pub(crate) fn blocks_per_request(chunk_bytes: usize, block_bytes: usize) -> usize {
    (chunk_bytes / block_bytes.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_garbage_is_refused() {
        let mut bytes = Vec::new();
        Request::encode(
            Op::Fetch,
            42,
            &[SequenceHash(7), SequenceHash(9)],
            &mut bytes,
        );
        assert_eq!(bytes.len(), REQUEST_HEADER + 16);
        let mut header = [0; REQUEST_HEADER];
        header.copy_from_slice(&bytes[..REQUEST_HEADER]);
        assert_eq!(
            Request::decode(header),
            Some(Request {
                op: Op::Fetch,
                transfer: 42,
                count: 2
            })
        );
        assert_eq!(
            &bytes[REQUEST_HEADER..REQUEST_HEADER + 8],
            7u64.to_le_bytes()
        );
        header[3] = 3;
        assert_eq!(Request::decode(header).map(|r| r.op), Some(Op::Stage));
        header[3] = 9;
        assert_eq!(Request::decode(header), None, "an unknown op");
        assert_eq!(Request::decode([0; REQUEST_HEADER]), None);

        let answer = Answer {
            status: Status::TooLarge,
            found: 5,
            block_bytes: 737_280,
        };
        assert_eq!(Answer::decode(answer.encode()), Some(answer));
        let unsupported = Answer {
            status: Status::Unsupported,
            ..answer
        };
        assert_eq!(Answer::decode(unsupported.encode()), Some(unsupported));
        let mut garbled = answer.encode();
        garbled[3] = 200;
        assert_eq!(Answer::decode(garbled), None);
    }

    #[test]
    fn a_request_asks_for_at_least_one_block() {
        assert_eq!(blocks_per_request(4 << 20, 737_280), 5);
        assert_eq!(blocks_per_request(1024, 4096), 1);
        assert_eq!(blocks_per_request(1024, 0), 1024);
    }
}
