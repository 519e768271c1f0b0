//! The overlap query: how deep each worker's cached prefix goes for a request's blocks.

use dynamo_core::SequenceHash;

use super::KvIndex;
use super::overlap::{Answer, Overlaps, TierOverlap};
use super::residents::{Resident, fastest_tier, slot_of, tiers_of};
use super::runs::common_prefix;
use super::walk::Walk;
use super::workers::WorkerTable;

impl KvIndex {
    /// For a request's sequence hashes, how deep each worker's cached prefix goes.
    ///
    /// The walk finds the first block in the map, then compares the request's next hashes with
    /// the positions that follow it in its run, and takes the residents of each segment it
    /// crosses once for all its positions. Where the run and the request part (or the run's
    /// positions are dead), the next block is looked up in the map again, and so on. The
    /// comparison, the segments and the next lookup do not wait on each other, so their cache
    /// misses overlap.
    pub fn overlaps(&self, hashes: &[SequenceHash]) -> Overlaps {
        let mut answer = Overlaps::default();
        self.overlaps_into(hashes, &mut answer);
        answer
    }

    /// [`overlaps`](Self::overlaps) written into `answer`, replacing what it held: the same
    /// workers in the same order. Its buffer is reused, so a caller that keeps one answer for
    /// its queries allocates none once it has held as many workers.
    pub fn overlaps_into(&self, hashes: &[SequenceHash], answer: &mut Overlaps) {
        let answer = &mut answer.workers;
        answer.clear();
        let Some(first) = hashes
            .first()
            .and_then(|&hash| self.blocks.get(&self.runs, hash))
        else {
            return;
        };
        let mut walk: Option<Walk> = None;
        // `loc` is where `hashes[next]` sits, a live position (the map has only those).
        let (mut loc, mut next) = (first, 0);
        'walk: loop {
            let run = &self.runs.runs[loc.run as usize];
            let from = loc.offset;
            let mut seg = run.seg_at(from);
            let ahead = run.hashes.get(from as usize + 1..).unwrap_or_default();
            let matched = 1 + common_prefix(&hashes[next + 1..], ahead);
            let end = from + matched as u32;
            // The block after the stretch, looked up before the segments are read.
            let beyond = hashes
                .get(next + matched)
                .and_then(|&hash| self.blocks.get(&self.runs, hash));
            // Most matches lie in one segment of the first run they find: their answer is that
            // segment's residents, each `matched` blocks deep, with no walk to keep.
            if walk.is_none() && beyond.is_none() && run.seg_end(seg) >= end {
                let residents = run.segs[seg].residents.as_slice(&self.runs.spill);
                one_segment(residents, matched as u32, &self.workers, answer);
                return;
            }
            self.runs.touch_spilled(run, seg, end);
            let mut at = from;
            while at < end {
                let residents = run.segs[seg].residents.as_slice(&self.runs.spill);
                if residents.is_empty() {
                    break;
                }
                let stop = run.seg_end(seg).min(end);
                match &mut walk {
                    None => walk = Some(Walk::start(residents, stop - at, answer)),
                    Some(walk) => {
                        if !walk.step(residents, stop - at, &self.workers, answer) {
                            break 'walk;
                        }
                    }
                }
                at = stop;
                seg += 1;
            }
            next += (at - from) as usize;
            // A dead stretch ends the run's help early: look the block up where it stopped.
            let found = if at == end {
                beyond
            } else {
                hashes
                    .get(next)
                    .and_then(|&hash| self.blocks.get(&self.runs, hash))
            };
            let Some(found) = found else {
                break;
            };
            loc = found;
        }
        if let Some(walk) = walk {
            walk.finish(&self.workers, answer);
        }
    }
}

/// Write into the empty `answer` the workers of a match whose `blocks` blocks all have the
/// same `residents`.
fn one_segment(residents: &[Resident], blocks: u32, workers: &WorkerTable, answer: &mut Answer) {
    answer.reserve(residents.len());
    for &resident in residents {
        if let Some(worker) = workers.id(slot_of(resident)) {
            let mut overlap = TierOverlap::default();
            overlap.add_n(fastest_tier(tiers_of(resident)), blocks);
            answer.push((worker, overlap));
        }
    }
}
