//! Diagnostic stand-ins, measured only with `--only diag`: our index fed the same events as
//! ours, behind lookups that do only the first part of a lookup's work, so that the time of a
//! lookup can be split. They are not indexers: their answers are empty (so the table counts
//! their wrong answers), and their ingest and bytes are ours.
//!
//! - `diag: timer only` returns at once: what the bench's clock around one call costs.
//! - `diag: first hash read` reads the query's first hash: the clock and the query's own
//!   first load, which every indexer pays before it can look anything up. With cold queries
//!   (the default) that load misses the cache; ours' lookups by deepest match, less this
//!   stand-in's, are what the index itself adds.

use std::marker::PhantomData;

use dynamo_core::{KvEvent, LocalBlockHash, SequenceHash};
use dynamo_router::Overlaps;

use super::ours::Ours;
use crate::bench::Indexer;

/// How every stand-in's name begins (the ratio table leaves them out of the peers).
pub const DIAG_PREFIX: &str = "diag: ";

/// The part of a lookup a stand-in does.
pub trait Part {
    /// The stand-in's name in the table.
    const NAME: &'static str;
    /// Do that part for `query`.
    fn run(query: &[SequenceHash]);
}

/// Nothing: the timer's own cost.
pub struct TimerOnly;

impl Part for TimerOnly {
    const NAME: &'static str = "diag: timer only";

    fn run(query: &[SequenceHash]) {
        std::hint::black_box(query.as_ptr());
    }
}

/// Read the query's first hash: the timer and the query's own first load.
pub struct FirstHash;

impl Part for FirstHash {
    const NAME: &'static str = "diag: first hash read";

    fn run(query: &[SequenceHash]) {
        std::hint::black_box(query.first().copied());
    }
}

/// Our index, fed every event, behind a lookup that does only `P`'s part.
pub struct Diag<P> {
    ours: Ours,
    part: PhantomData<P>,
}

impl<P: Part> Indexer for Diag<P> {
    type Event = KvEvent;
    type Query = Vec<SequenceHash>;
    type Answer = Overlaps;

    const NAME: &'static str = P::NAME;

    fn new(workers: u64) -> Self {
        Diag {
            ours: Ours::new(workers),
            part: PhantomData,
        }
    }

    fn event(&self, event: &KvEvent) -> KvEvent {
        self.ours.event(event)
    }

    fn query(&self, sequence: &[SequenceHash], local: &[LocalBlockHash]) -> Vec<SequenceHash> {
        self.ours.query(sequence, local)
    }

    fn apply(&mut self, event: &mut KvEvent) -> bool {
        self.ours.apply(event)
    }

    fn lookup(&self, query: &mut Vec<SequenceHash>) -> Overlaps {
        P::run(query);
        Overlaps::default()
    }

    fn depths(&self, answer: &Overlaps, out: &mut Vec<(u64, u32)>) {
        self.ours.depths(answer, out)
    }
}
