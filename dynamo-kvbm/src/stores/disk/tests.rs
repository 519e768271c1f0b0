//! Reads and writes staged through the store's buffers and straight from or into the caller's
//! memory give the same bytes, with aligned and unaligned memory, in batches and one by one.

use dynamo_core::SequenceHash;

use super::aligned::{ALIGN, AlignedBuf, is_aligned};
use super::{DiskConfig, DiskStore};
use crate::BlockStore;

const BLOCKS: usize = 10;
const SIZE: usize = 2 * ALIGN;

fn pattern(n: usize) -> impl Iterator<Item = u8> {
    (0..SIZE).map(move |i| ((n * 31 + i * 7) % 251) as u8)
}

#[test]
fn staged_and_unstaged_io_returns_the_blocks_written() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for stage in [true, false] {
        // Reads staged and writes not, then the other way round.
        let config = DiskConfig::new(dir.path().join(format!("blocks-{stage}")), SIZE, BLOCKS)
            .queue_depth(3)
            .stage_reads(stage)
            .stage_writes(!stage);
        let store = DiskStore::open(config).expect("a disk store");
        let mut source = AlignedBuf::new(BLOCKS * SIZE);
        for (n, chunk) in source.as_bytes_mut().chunks_exact_mut(SIZE).enumerate() {
            chunk.iter_mut().zip(pattern(n)).for_each(|(b, p)| *b = p);
        }
        let hashes: Vec<SequenceHash> = (0..BLOCKS as u64).map(SequenceHash).collect();
        let batch: Vec<(SequenceHash, &[u8])> = hashes
            .iter()
            .copied()
            .zip(source.as_bytes().chunks_exact(SIZE))
            .collect();
        store.put_many(&batch).expect("put_many");

        let mut aligned = AlignedBuf::new(BLOCKS * SIZE);
        assert!(is_aligned(aligned.as_bytes()));
        let found = store.get_many(&hashes, aligned.as_bytes_mut());
        assert_eq!(found.expect("get_many"), [true; BLOCKS]);
        assert_eq!(aligned.as_bytes(), source.as_bytes(), "stage {stage}");

        let mut unaligned = vec![0u8; BLOCKS * SIZE + 1];
        let found = store.get_many(&hashes, &mut unaligned[1..]);
        assert_eq!(found.expect("get_many"), [true; BLOCKS]);
        assert_eq!(&unaligned[1..], source.as_bytes(), "stage {stage}");

        let mut one = AlignedBuf::new(SIZE);
        assert!(store.get(hashes[7], one.as_bytes_mut()).expect("get"));
        assert!(
            one.as_bytes().iter().copied().eq(pattern(7)),
            "stage {stage}"
        );
    }
}
