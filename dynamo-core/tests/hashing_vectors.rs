//! Hash vectors published by NVIDIA Dynamo 1.6.1: tokens 0..=127, block size 64.
//!
//! Events and tools interoperate with Dynamo's router only if these hold exactly.

use dynamo_core::{BlockHasher, BlockSize, GenerateRequest, LocalBlockHash, SequenceHash};

fn prompt() -> Vec<u32> {
    (0..=127).collect()
}

fn hasher() -> BlockHasher {
    BlockHasher::new(BlockSize::new(64).expect("non-zero"))
}

#[test]
fn local_hashes_match_dynamo() {
    assert_eq!(
        hasher().local_hashes(&prompt()),
        [
            LocalBlockHash(0x304d910e689e42bf),
            LocalBlockHash(0x2e0cebb8f3781524)
        ]
    );
}

#[test]
fn sequence_hashes_match_dynamo() {
    assert_eq!(
        hasher().sequence_hashes(&prompt()),
        [
            SequenceHash(0x304d910e689e42bf),
            SequenceHash(0x23bd5ef232e90ecb)
        ]
    );
}

#[test]
fn lora_local_hash_matches_dynamo() {
    let tokens = prompt();
    let first = &tokens[..64];
    assert_eq!(
        hasher().with_lora("my-lora").local_hash(first),
        LocalBlockHash(0x8bef7bed47b29416)
    );
}

#[test]
fn salted_local_hash_matches_dynamo() {
    let tokens = prompt();
    let first = &tokens[..64];
    assert_eq!(
        hasher().with_salt("tenant-a").local_hash(first),
        LocalBlockHash(0xc842e16d1e1ce8a5)
    );
}

#[test]
fn empty_lora_and_salt_count_as_absent() {
    assert_eq!(hasher().with_lora("").with_salt(""), hasher());
}

#[test]
fn request_hashes_follow_its_lora_and_salt() {
    let mut request = GenerateRequest::new("r", "m", prompt());
    request.cache_salt = Some("tenant-a".into());
    let hashes = request
        .block_hasher(BlockSize::new(64).expect("non-zero"))
        .local_hashes(&request.tokens);
    assert_eq!(hashes[0], LocalBlockHash(0xc842e16d1e1ce8a5));
}
