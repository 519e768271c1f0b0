//! The measurements, the same for every indexer: ingest throughput, lookups at arrival, live
//! bytes per resident (worker, block) pair, and agreement with the exact answers.

use std::time::{Duration, Instant};

use dynamo_core::{KvEvent, LocalBlockHash, SequenceHash};

use crate::alloc;
use crate::stream::Stream;

/// One prefix indexer behind the bench's common shape.
///
/// Events and queries are converted to the indexer's own types before any clock starts, so the
/// timings cover the indexer's own API calls only. `apply` and `lookup` take their input by
/// `&mut` so that an API that consumes its input can take it without a copy.
pub trait Indexer {
    /// An event in the indexer's own type.
    type Event;
    /// A query in the indexer's own type.
    type Query: Touch;
    /// What a lookup returns, in the indexer's own type.
    type Answer;

    /// The name in the table.
    const NAME: &'static str;

    /// An empty index for workers `0..workers`.
    fn new(workers: u64) -> Self;

    /// `event` in the indexer's own type.
    fn event(&self, event: &KvEvent) -> Self::Event;

    /// A request in the indexer's own type, from its blocks' sequence hashes and the same
    /// blocks' local (content) hashes.
    fn query(&self, sequence: &[SequenceHash], local: &[LocalBlockHash]) -> Self::Query;

    /// Apply one event; `false` when the indexer rejected it.
    fn apply(&mut self, event: &mut Self::Event) -> bool;

    /// Wait until every event applied so far is visible to lookups (a no-op for synchronous
    /// indexers).
    fn sync(&mut self) {}

    /// The per-worker overlap for one request.
    fn lookup(&self, query: &mut Self::Query) -> Self::Answer;

    /// `answer` as (worker, depth in blocks) pairs with a non-zero depth, in any order.
    fn depths(&self, answer: &Self::Answer, out: &mut Vec<(u64, u32)>);
}

/// Reading a query's hashes without timing it, so that its lookup finds them in the cache.
pub trait Touch {
    /// Read every hash of the query.
    fn touch(&self);
}

impl<T: Copy> Touch for Vec<T> {
    fn touch(&self) {
        for &hash in self {
            std::hint::black_box(hash);
        }
    }
}

/// One line of the table.
pub struct Row {
    pub name: &'static str,
    pub workers: u64,
    pub ingest_events_per_s: f64,
    pub ingest_blocks_per_s: f64,
    /// Events per second of CPU time (every thread of this process): the median run's CPU time,
    /// which a loaded machine's preemptions do not add to. `None` where the clock cannot be read.
    pub ingest_cpu_events_per_s: Option<f64>,
    pub lookups_per_s: f64,
    /// Lookups divided by the sum over requests of each request's median lookup time across
    /// runs: one lookup slowed by the scheduler (a shared machine) weighs as one sample of `runs`
    /// there, not as thousands of lookups' worth of time.
    pub lookups_per_s_median: f64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    /// For each class of [`DEPTHS`], the requests in it and the mean of their median lookup
    /// times in ns.
    pub by_depth: [(usize, f64); DEPTHS.len()],
    pub bytes_per_resident: f64,
    /// Live bytes of the freshly built, empty index.
    pub empty_bytes: usize,
    /// Queries, out of the stream's, where some worker's depth differs from the exact one.
    pub wrong_answers: usize,
    /// Events the indexer rejected during ingest (`None`: its API does not say).
    pub rejected_events: Option<usize>,
}

/// Classes of requests by their deepest exact match in blocks (inclusive ranges): the first
/// is the requests that no worker holds the first block of.
pub const DEPTHS: [(u32, u32); 5] = [(0, 0), (1, 4), (5, 16), (17, 64), (65, u32::MAX)];

/// The class of [`DEPTHS`] a request whose deepest match is `depth` blocks falls in.
fn depth_class(depth: u32) -> usize {
    DEPTHS
        .iter()
        .position(|&(lo, hi)| (lo..=hi).contains(&depth))
        .unwrap_or(DEPTHS.len() - 1)
}

/// Measure `I` on `stream`, `runs` times for each timing; with `warm`, each query's hashes are
/// read just before its lookup is timed.
pub fn measure<I: Indexer>(stream: &Stream, runs: usize, warm: bool) -> Row {
    let (empty_bytes, full_bytes) = footprint::<I>(stream);
    let bytes_per_resident = full_bytes as f64 / stream.resident_pairs.max(1) as f64;
    let (ingest, ingest_cpu, rejected) = ingest::<I>(stream, runs);
    let (latencies, wrong_answers) = lookups::<I>(stream, runs, warm);
    let total: u64 = latencies.iter().sum();
    let requests = stream.steps.len();
    let medians: Vec<u64> = (0..requests)
        .map(|i| {
            let mut times: Vec<u64> = (0..runs).map(|run| latencies[run * requests + i]).collect();
            times.sort_unstable();
            times[times.len() / 2]
        })
        .collect();
    let median_total: u64 = medians.iter().sum();
    let mut by_depth = [(0usize, 0.0f64); DEPTHS.len()];
    for (median, expected) in medians.iter().zip(&stream.expected) {
        let deepest = expected.iter().map(|&(_, depth)| depth).max().unwrap_or(0);
        let class = &mut by_depth[depth_class(deepest)];
        class.0 += 1;
        class.1 += *median as f64;
    }
    for class in &mut by_depth {
        class.1 /= class.0.max(1) as f64;
    }
    Row {
        name: I::NAME,
        workers: stream.workers,
        ingest_events_per_s: stream.events as f64 / ingest.as_secs_f64(),
        ingest_blocks_per_s: stream.blocks as f64 / ingest.as_secs_f64(),
        ingest_cpu_events_per_s: ingest_cpu.map(|cpu| stream.events as f64 / cpu.as_secs_f64()),
        lookups_per_s: latencies.len() as f64 / (total as f64 * 1e-9),
        lookups_per_s_median: requests as f64 / (median_total as f64 * 1e-9),
        p50_ns: percentile(&latencies, 0.50),
        p99_ns: percentile(&latencies, 0.99),
        by_depth,
        bytes_per_resident,
        empty_bytes,
        wrong_answers,
        rejected_events: rejected,
    }
}

/// Live heap bytes of a new, empty index and of the index holding the whole stream. Events are
/// converted one at a time and dropped after they are applied, so only the index's own
/// allocations remain.
fn footprint<I: Indexer>(stream: &Stream) -> (usize, usize) {
    let before = alloc::live_bytes();
    let mut index = I::new(stream.workers);
    let empty = alloc::live_bytes().saturating_sub(before);
    for step in &stream.steps {
        for event in &step.events {
            let mut event = index.event(event);
            index.apply(&mut event);
        }
        index.sync();
    }
    let grown = alloc::live_bytes().saturating_sub(before);
    drop(index);
    (empty, grown)
}

/// The median time to apply the whole stream to a fresh index (wall clock, and the CPU time
/// of this process's threads where it can be read), and the events it rejected.
fn ingest<I: Indexer>(stream: &Stream, runs: usize) -> (Duration, Option<Duration>, Option<usize>) {
    let mut times = Vec::with_capacity(runs);
    let mut cpu_times = Vec::with_capacity(runs);
    let mut rejected = 0;
    for _ in 0..runs {
        let mut index = I::new(stream.workers);
        let mut events: Vec<I::Event> = stream.events().map(|e| index.event(e)).collect();
        rejected = 0;
        let cpu_start = cpu_time();
        let start = Instant::now();
        for event in &mut events {
            rejected += usize::from(!index.apply(event));
        }
        index.sync();
        times.push(start.elapsed());
        if let (Some(from), Some(to)) = (cpu_start, cpu_time()) {
            cpu_times.push(to.saturating_sub(from));
        }
        drop(events);
        drop(index);
    }
    times.sort_unstable();
    cpu_times.sort_unstable();
    let cpu = (cpu_times.len() == runs).then(|| cpu_times[runs / 2]);
    (times[times.len() / 2], cpu, Some(rejected))
}

/// The CPU time of every thread of this process (`CLOCK_PROCESS_CPUTIME_ID`, which the kernel
/// brings up to date when read, to the nanosecond); `None` where the clock cannot be read.
fn cpu_time() -> Option<Duration> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) };
    (rc == 0).then(|| Duration::new(now.tv_sec as u64, now.tv_nsec as u32))
}

/// Replay the stream `runs` times, timing each lookup at its request's arrival (with `warm`,
/// after reading the query's hashes, untimed). Returns every lookup's latency in ns (run after
/// run, each in request order) and the number of wrong answers of the first run.
fn lookups<I: Indexer>(stream: &Stream, runs: usize, warm: bool) -> (Vec<u64>, usize) {
    let mut latencies = Vec::with_capacity(runs * stream.steps.len());
    let mut wrong = 0;
    let mut depths = Vec::new();
    for run in 0..runs {
        let mut index = I::new(stream.workers);
        let mut queries: Vec<I::Query> = (stream.steps.iter().zip(&stream.locals))
            .map(|(step, local)| index.query(&step.query, local))
            .collect();
        let mut events: Vec<Vec<I::Event>> = stream
            .steps
            .iter()
            .map(|s| s.events.iter().map(|e| index.event(e)).collect())
            .collect();
        for (i, query) in queries.iter_mut().enumerate() {
            if warm {
                query.touch();
            }
            let start = Instant::now();
            let answer = index.lookup(query);
            latencies.push(start.elapsed().as_nanos() as u64);
            if run == 0 {
                depths.clear();
                index.depths(&answer, &mut depths);
                depths.sort_unstable();
                wrong += usize::from(depths != stream.expected[i]);
            }
            drop(answer);
            for event in &mut events[i] {
                index.apply(event);
            }
            index.sync();
        }
    }
    (latencies, wrong)
}

fn percentile(values: &[u64], q: f64) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(rank).copied().unwrap_or(0)
}
