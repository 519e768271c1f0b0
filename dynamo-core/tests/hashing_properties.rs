//! Invariants of block hashing, checked against simple reference definitions.

use dynamo_core::{BlockHasher, BlockSize, HashedBlock, SequenceHash};
use proptest::prelude::*;

fn hasher(block_size: u32) -> BlockHasher {
    BlockHasher::new(BlockSize::new(block_size).expect("strategies never pick 0"))
}

/// A prompt and a block size; small vocabularies make repeated blocks likely.
fn prompt_and_block_size() -> impl Strategy<Value = (Vec<u32>, u32)> {
    (prop::collection::vec(0u32..8, 0..300), 1u32..40)
}

proptest! {
    #[test]
    fn chain_of_a_prefix_is_a_prefix_of_the_chain((tokens, block_size) in prompt_and_block_size(), cut in 0usize..300) {
        let hasher = hasher(block_size);
        let cut = cut.min(tokens.len());
        let whole = hasher.hash_blocks(&tokens);
        let prefix = hasher.hash_blocks(&tokens[..cut]);
        prop_assert_eq!(&whole[..prefix.len()], &prefix[..]);
        prop_assert_eq!(prefix.len(), cut / block_size as usize);
    }

    #[test]
    fn incremental_equals_one_shot_for_any_split(
        (tokens, block_size) in prompt_and_block_size(),
        cuts in prop::collection::vec(0usize..300, 0..8),
    ) {
        let hasher = hasher(block_size);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(tokens.len())).collect();
        cuts.push(tokens.len());
        cuts.sort_unstable();
        let mut incremental = hasher.incremental();
        let mut blocks = Vec::new();
        let mut start = 0;
        for cut in cuts {
            blocks.extend(incremental.extend(&tokens[start..cut]));
            start = cut;
        }
        prop_assert_eq!(&blocks, &hasher.hash_blocks(&tokens));
        prop_assert_eq!(incremental.pending_tokens().len(), tokens.len() % block_size as usize);
        prop_assert_eq!(incremental.last_sequence_hash(), blocks.last().map(|b| b.sequence));
    }

    #[test]
    fn sequence_hash_follows_the_reference_chain((tokens, block_size) in prompt_and_block_size()) {
        let hasher = hasher(block_size);
        let locals = hasher.local_hashes(&tokens);
        let mut parent: Option<SequenceHash> = None;
        let reference: Vec<HashedBlock> = locals
            .iter()
            .map(|&local| {
                let sequence = SequenceHash::chain(parent, local);
                parent = Some(sequence);
                HashedBlock { local, sequence }
            })
            .collect();
        prop_assert_eq!(hasher.hash_blocks(&tokens), reference);
    }

    #[test]
    fn a_lora_name_or_salt_changes_every_hash(
        tokens in prop::collection::vec(any::<u32>(), 16..200),
        block_size in 1u32..16,
        name in "[a-z0-9-]{1,12}",
    ) {
        let plain = hasher(block_size);
        let base = plain.hash_blocks(&tokens);
        for variant in [plain.with_lora(&name), plain.with_salt(&name)] {
            let changed = variant.hash_blocks(&tokens);
            prop_assert_eq!(changed.len(), base.len());
            for (a, b) in base.iter().zip(&changed) {
                prop_assert_ne!(a.local, b.local);
                prop_assert_ne!(a.sequence, b.sequence);
            }
        }
        // The same string as LoRA name and as salt must not collide either.
        prop_assert_ne!(plain.with_lora(&name).seed(), plain.with_salt(&name).seed());
    }
}
