//! Page-aligned buffers without `unsafe`: a vector of 4096-byte, 4096-aligned pages seen as
//! bytes through bytemuck.

use bytemuck::{Pod, Zeroable};
use parking_lot::Mutex;

/// The alignment of direct I/O: offsets, lengths and buffer addresses are multiples of it.
/// 4096 covers both 512-byte and 4 KiB logical sectors.
pub(super) const ALIGN: usize = 4096;

/// One aligned page.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(4096))]
struct Page([u8; ALIGN]);

/// `bytes` rounded up to whole pages.
pub(super) fn round_up(bytes: usize) -> Option<usize> {
    bytes.checked_next_multiple_of(ALIGN)
}

/// Whether `bytes` can go to or from a direct-I/O file as it is: page-aligned address and a
/// whole number of pages.
pub(super) fn is_aligned(bytes: &[u8]) -> bool {
    bytes.as_ptr().addr().is_multiple_of(ALIGN) && bytes.len().is_multiple_of(ALIGN)
}

/// A zeroed, page-aligned buffer of whole pages.
pub(super) struct AlignedBuf(Vec<Page>);

impl AlignedBuf {
    /// A buffer of `bytes` (a multiple of [`ALIGN`]).
    pub(super) fn new(bytes: usize) -> Self {
        AlignedBuf(vec![Page::zeroed(); bytes / ALIGN])
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }

    pub(super) fn as_bytes_mut(&mut self) -> &mut [u8] {
        bytemuck::cast_slice_mut(&mut self.0)
    }
}

/// Bounce buffers for blocks whose caller memory is not aligned, reused across calls: the pool
/// grows to the most buffers ever in use at once (the queue depth) and no further.
pub(super) struct BouncePool {
    bytes: usize,
    free: Mutex<Vec<AlignedBuf>>,
}

impl BouncePool {
    pub(super) fn new(bytes: usize) -> Self {
        BouncePool {
            bytes,
            free: Mutex::new(Vec::new()),
        }
    }

    /// Run `f` with a buffer of the pool's size (not zeroed between uses).
    pub(super) fn with<R>(&self, f: impl FnOnce(&mut AlignedBuf) -> R) -> R {
        let taken = self.free.lock().pop();
        let mut buf = taken.unwrap_or_else(|| AlignedBuf::new(self.bytes));
        let result = f(&mut buf);
        self.free.lock().push(buf);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_page_aligned_and_whole_pages() {
        let mut buf = AlignedBuf::new(3 * ALIGN);
        assert!(is_aligned(buf.as_bytes()));
        assert_eq!(buf.as_bytes_mut().len(), 3 * ALIGN);
        assert!(!is_aligned(&buf.as_bytes()[1..ALIGN + 1]));
        assert!(!is_aligned(&buf.as_bytes()[..ALIGN + 1]));
        assert_eq!(round_up(1), Some(ALIGN));
        assert_eq!(round_up(ALIGN), Some(ALIGN));
        assert_eq!(round_up(usize::MAX), None);
    }
}
