//! Runs: blocks kept side by side in the order they were stored, with their residents kept per
//! stretch of blocks rather than per block.
//!
//! Every block the index holds sits at one position of one run (the map takes its sequence
//! hash to that position). A run is an array of sequence hashes cut into segments; all the
//! positions of a segment have the same residents. A segment with no resident is dead: its
//! hashes are no longer in the map (a block that is stored again is placed anew). A query that
//! has found block `i` of a request in a run compares the request's next hashes with the run's
//! next positions, a plain array comparison, and takes one segment's residents for the whole
//! stretch that matches; it goes back to the map only where the run and the request part. A
//! run is only a guess of what follows a block: a position is trusted because its hash is equal
//! and its segment is alive, never because of where it sits, so holes, evictions in the middle of
//! a run and blocks stored in any order stay exact.

use dynamo_core::SequenceHash;
use smallvec::SmallVec;

use super::BlockMap;
use super::residents::{Change, Resident, Residents, SpillTable};

/// Where a block sits: a run and a position in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) run: u32,
    pub(crate) offset: u32,
}

/// A stretch of a run's positions, from `start` to the next segment's start, with one set of
/// residents.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seg {
    pub(crate) start: u32,
    pub(crate) residents: Residents,
}

/// One run: its hashes and their segments (sorted by start, the first at 0).
///
/// Most runs have one or two segments: those live in the header, which fills one cache line,
/// so a query that finds a block's run reads its residents without another dependent load.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct Run {
    pub(crate) hashes: Vec<SequenceHash>,
    pub(crate) segs: Segs,
    /// Positions in segments with residents.
    live: u32,
}

impl Run {
    /// The segment holding `offset`.
    pub(crate) fn seg_at(&self, offset: u32) -> usize {
        self.segs.partition_point(|s| s.start <= offset) - 1
    }

    /// Where segment `i` ends.
    pub(crate) fn seg_end(&self, i: usize) -> u32 {
        self.segs
            .get(i + 1)
            .map_or(self.hashes.len() as u32, |s| s.start)
    }

    /// Split the segment holding `at` so that a segment starts there; returns its index.
    fn split(&mut self, spill: &mut SpillTable, at: u32) -> usize {
        let i = self.seg_at(at);
        if self.segs[i].start == at {
            return i;
        }
        let residents = self.segs[i].residents.duplicate(spill);
        self.segs.insert(
            i + 1,
            Seg {
                start: at,
                residents,
            },
        );
        i + 1
    }

    /// Merge neighbours with the same residents among segments `lo..=hi`.
    fn merge(&mut self, spill: &mut SpillTable, lo: usize, hi: usize) {
        let hi = hi.min(self.segs.len().saturating_sub(1));
        for k in (lo.max(1)..=hi).rev() {
            if self.segs[k]
                .residents
                .same(&self.segs[k - 1].residents, spill)
            {
                let gone = self.segs.remove(k);
                gone.residents.release(spill);
            }
        }
    }
}

/// A run's segments, the first two in the run's header.
pub(crate) type Segs = SmallVec<[Seg; 2]>;

/// A change to one worker's residency.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    /// Add tiers (a bit mask) to a worker slot.
    Insert(u32, u8),
    /// Remove tiers from a worker slot.
    Remove(u32, u8),
}

/// What an [`Op`] did to a range of positions.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tally {
    /// Positions the worker came to hold, or no longer holds.
    pub(crate) residency: u64,
    /// Positions where nothing changed.
    pub(crate) unchanged: u64,
}

/// Every run of an index, with the arena of the segments' longer resident lists.
#[derive(Debug, Default)]
pub(crate) struct Runs {
    pub(crate) runs: Vec<Run>,
    free: Vec<u32>,
    /// The run new chains are appended to.
    open: Option<u32>,
    pub(crate) spill: SpillTable,
}

/// Positions past which the open run is left for a new one.
const OPEN_RUN_MAX: usize = 64;

/// Dead positions a run may carry before it is compacted (and at least as many as live ones).
const MIN_DEAD: u32 = 8;

impl Runs {
    /// The residents of the block at `loc`.
    pub(crate) fn residents(&self, loc: Loc) -> &[Resident] {
        let run = &self.runs[loc.run as usize];
        run.segs[run.seg_at(loc.offset)]
            .residents
            .as_slice(&self.spill)
    }

    /// Read the first word of the spilled resident list of each segment of `run` from `seg`
    /// up to position `end`, discarding it: the loads do not depend on each other, so their
    /// cache misses overlap, and the walk over the segments finds the lists in cache.
    pub(crate) fn touch_spilled(&self, run: &Run, seg: usize, end: u32) {
        let mut words = 0;
        for s in run.segs[seg..].iter().take_while(|s| s.start < end) {
            words ^= s.residents.peek(&self.spill);
        }
        std::hint::black_box(words);
    }

    /// The hash at `loc` (a position that exists).
    #[inline]
    pub(crate) fn hash_at(&self, loc: Loc) -> SequenceHash {
        self.runs[loc.run as usize].hashes[loc.offset as usize]
    }

    /// Whether `offset` of `run` exists, holds `hash` and is alive.
    #[inline]
    pub(crate) fn holds(&self, run: u32, offset: u32, hash: SequenceHash) -> bool {
        let run = &self.runs[run as usize];
        run.hashes.get(offset as usize) == Some(&hash)
            && !run.segs[run.seg_at(offset)].residents.is_empty()
    }

    /// How many positions from `loc` (a live one) on are alive and hold `loc`'s hash then
    /// `next`'s, in order: 1 and the length of the live stretch that follows it and matches.
    pub(crate) fn live_stretch(&self, loc: Loc, next: &[SequenceHash]) -> u32 {
        let run = &self.runs[loc.run as usize];
        let ahead = run
            .hashes
            .get(loc.offset as usize + 1..)
            .unwrap_or_default();
        let end = loc.offset + 1 + common_prefix(next, ahead) as u32;
        let mut seg = run.seg_at(loc.offset);
        loop {
            let seg_end = run.seg_end(seg);
            if seg_end >= end {
                return end - loc.offset;
            }
            seg += 1;
            if run.segs[seg].residents.is_empty() {
                return seg_end - loc.offset;
            }
        }
    }

    /// Whether `offset` of `run` exists and holds `hash`, alive or not.
    #[inline]
    pub(crate) fn names(&self, run: u32, offset: u32, hash: SequenceHash) -> bool {
        self.runs[run as usize].hashes.get(offset as usize) == Some(&hash)
    }

    /// Whether `offset` is one past the end of `run`.
    #[inline]
    pub(crate) fn ends_before(&self, run: u32, offset: u32) -> bool {
        self.runs[run as usize].hashes.len() == offset as usize
    }

    /// A place for a lone `hash` (dead until an insert): the end of the run last opened for
    /// lone blocks, while it is short, so that blocks stored one event each (a snapshot
    /// replayed as events) do not each cost a run.
    pub(crate) fn open(&mut self, hash: SequenceHash) -> Loc {
        if let Some(run) = self.open
            && self.runs[run as usize].hashes.len() < OPEN_RUN_MAX
            && !self.runs[run as usize].hashes.is_empty()
        {
            return self.append(run, hash, 16);
        }
        let loc = self.create(hash, 16);
        self.open = Some(loc.run);
        loc
    }

    /// A new run holding `hash` (dead until an insert), with room for `capacity` positions.
    pub(crate) fn create(&mut self, hash: SequenceHash, capacity: usize) -> Loc {
        let mut hashes = Vec::with_capacity(capacity.max(1));
        hashes.push(hash);
        let run = Run {
            hashes,
            segs: smallvec::smallvec![Seg {
                start: 0,
                residents: Residents::EMPTY,
            }],
            live: 0,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.runs[id as usize] = run;
                id
            }
            None => {
                self.runs.push(run);
                (self.runs.len() - 1) as u32
            }
        };
        Loc { run: id, offset: 0 }
    }

    /// Add `hash` at the end of `run`, dead until an insert.
    #[inline]
    pub(crate) fn append(&mut self, run: u32, hash: SequenceHash, more: usize) -> Loc {
        let r = &mut self.runs[run as usize];
        let offset = r.hashes.len() as u32;
        if r.hashes.len() == r.hashes.capacity() {
            r.hashes.reserve_exact(more.max(r.hashes.len() / 2).max(4));
        }
        r.hashes.push(hash);
        if r.segs.last().is_none_or(|s| !s.residents.is_empty()) {
            r.segs.push(Seg {
                start: offset,
                residents: Residents::EMPTY,
            });
        }
        Loc { run, offset }
    }

    /// Apply `op` to positions `start..end` of `run`. Positions whose last resident leaves are
    /// taken out of `map`; the caller puts positions that come alive into `map` itself (before,
    /// so that a block named twice is placed once). Offsets do not move: call [`Runs::tidy`]
    /// once no position of the run is held any more.
    pub(crate) fn update(
        &mut self,
        map: &mut BlockMap,
        run: u32,
        start: u32,
        end: u32,
        op: Op,
    ) -> Tally {
        let Runs { runs, spill, .. } = self;
        let r = &mut runs[run as usize];
        let first = r.split(spill, start);
        let last = if (end as usize) < r.hashes.len() {
            r.split(spill, end)
        } else {
            r.segs.len()
        };
        let mut tally = Tally::default();
        for k in first..last {
            let (from, to) = (r.segs[k].start, r.seg_end(k));
            let len = to - from;
            let residents = &mut r.segs[k].residents;
            let was_empty = residents.is_empty();
            let change = match op {
                Op::Insert(slot, tiers) => residents.insert(slot, tiers, spill),
                Op::Remove(slot, tiers) => residents.remove(slot, tiers, spill),
            };
            match change {
                Change::Residency => tally.residency += u64::from(len),
                Change::Tiers => {}
                Change::None => tally.unchanged += u64::from(len),
            }
            match (was_empty, residents.is_empty()) {
                (true, false) => r.live += len,
                (false, true) => {
                    r.live -= len;
                    for (offset, hash) in (from..to).zip(&r.hashes[from as usize..to as usize]) {
                        map.remove_at(*hash, Loc { run, offset });
                    }
                }
                _ => {}
            }
        }
        r.merge(spill, first.saturating_sub(1), last);
        tally
    }

    /// Apply `op` to every position of every run, then tidy them (what a clear does).
    pub(crate) fn update_all(&mut self, map: &mut BlockMap, op: Op) -> Tally {
        let mut tally = Tally::default();
        for run in 0..self.runs.len() as u32 {
            let len = self.runs[run as usize].hashes.len() as u32;
            if len > 0 {
                let t = self.update(map, run, 0, len, op);
                tally.residency += t.residency;
                self.tidy(map, run);
            }
        }
        tally
    }

    /// Give back what dead positions hold: drop them from the end, free a run with nothing
    /// alive, and compact a run whose dead positions outnumber its live ones (moving its live
    /// positions, so `map` is updated).
    pub(crate) fn tidy(&mut self, map: &mut BlockMap, run: u32) {
        let Runs {
            runs, spill, free, ..
        } = self;
        let r = &mut runs[run as usize];
        while r.segs.last().is_some_and(|s| s.residents.is_empty()) {
            if let Some(dead) = r.segs.pop() {
                r.hashes.truncate(dead.start as usize);
            }
        }
        if r.live == 0 {
            if !r.hashes.is_empty() || r.hashes.capacity() > 0 || !r.segs.is_empty() {
                for seg in r.segs.drain(..) {
                    seg.residents.release(spill);
                }
                *r = Run::default();
                free.push(run);
            }
            return;
        }
        let dead = r.hashes.len() as u32 - r.live;
        if dead >= MIN_DEAD && dead > r.live {
            let mut hashes = Vec::with_capacity(r.live as usize);
            let mut segs = Segs::new();
            for k in 0..r.segs.len() {
                let seg = r.segs[k];
                if seg.residents.is_empty() {
                    continue;
                }
                let start = hashes.len() as u32;
                for (offset, hash) in
                    (seg.start..).zip(&r.hashes[seg.start as usize..r.seg_end(k) as usize])
                {
                    let to = Loc {
                        run,
                        offset: hashes.len() as u32,
                    };
                    map.relocate(*hash, Loc { run, offset }, to);
                    hashes.push(*hash);
                }
                segs.push(Seg {
                    start,
                    residents: seg.residents,
                });
            }
            r.hashes = hashes;
            r.segs = segs;
            let last = r.segs.len();
            r.merge(spill, 0, last);
        } else if r.hashes.capacity() > 4 * r.hashes.len() + 64 {
            // Only well past the length, so that a run trimmed at its end and grown again
            // does not move back and forth.
            r.hashes.shrink_to(2 * r.hashes.len());
        }
    }

    /// Every live segment: its hashes and its residents.
    pub(crate) fn live(&self) -> impl Iterator<Item = (&[SequenceHash], &[Resident])> + '_ {
        self.runs.iter().flat_map(move |run| {
            (0..run.segs.len()).filter_map(move |k| {
                let seg = &run.segs[k];
                let residents = seg.residents.as_slice(&self.spill);
                (!residents.is_empty()).then(|| {
                    (
                        &run.hashes[seg.start as usize..run.seg_end(k) as usize],
                        residents,
                    )
                })
            })
        })
    }

    /// Heap bytes held by the runs and the arena.
    pub(crate) fn heap_bytes(&self) -> usize {
        let runs: usize = self
            .runs
            .iter()
            .map(|r| {
                let segs = if r.segs.spilled() {
                    r.segs.capacity()
                } else {
                    0
                };
                r.hashes.capacity() * std::mem::size_of::<SequenceHash>()
                    + segs * std::mem::size_of::<Seg>()
            })
            .sum();
        runs + self.runs.capacity() * std::mem::size_of::<Run>()
            + self.free.capacity() * 4
            + self.spill.heap_bytes()
    }
}

/// How many leading hashes `a` and `b` share.
pub(crate) fn common_prefix(a: &[SequenceHash], b: &[SequenceHash]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 4 <= n {
        let differ = (a[i].0 ^ b[i].0)
            | (a[i + 1].0 ^ b[i + 1].0)
            | (a[i + 2].0 ^ b[i + 2].0)
            | (a[i + 3].0 ^ b[i + 3].0);
        if differ != 0 {
            break;
        }
        i += 4;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// Runs a removal touched, to tidy once the removal is done.
pub(crate) type Touched = SmallVec<[u32; 8]>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_header_with_two_segments_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Run>(), 64);
        assert_eq!(std::mem::align_of::<Run>(), 64);
        assert_eq!(Segs::new().inline_size(), 2);
    }

    #[test]
    fn a_live_stretch_ends_where_the_hashes_part_a_dead_segment_starts_or_the_run_ends() {
        let h = |i: u64| SequenceHash(1000 + i);
        let (mut runs, mut map) = (Runs::default(), BlockMap::default());
        let first = runs.create(h(0), 6);
        for i in 1..6 {
            runs.append(first.run, h(i), 0);
        }
        runs.update(&mut map, first.run, 0, 6, Op::Insert(0, 1));
        // Position 3 loses its only resident: its segment is dead.
        runs.update(&mut map, first.run, 3, 4, Op::Remove(0, 1));
        let at = |offset| Loc {
            run: first.run,
            offset,
        };
        assert_eq!(runs.live_stretch(at(0), &[h(1), h(2), h(3), h(4)]), 3);
        assert_eq!(runs.live_stretch(at(0), &[h(1), h(9)]), 2);
        assert_eq!(runs.live_stretch(at(1), &[]), 1);
        assert_eq!(runs.live_stretch(at(4), &[h(5), h(6), h(7)]), 2);
        // Another worker's residency splits the segments without ending the stretch.
        runs.update(&mut map, first.run, 1, 2, Op::Insert(1, 1));
        assert_eq!(runs.live_stretch(at(0), &[h(1), h(2), h(3)]), 3);
    }
}
