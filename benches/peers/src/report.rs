//! The markdown output: one table of every measurement, then ours against the best peer.

use crate::bench::{DEPTHS, Indexer, Row};
use crate::indexers::diag::DIAG_PREFIX;
use crate::indexers::ours::Ours;
use crate::stream::Stream;

/// The sizes of one worker count's stream.
pub struct Summary {
    pub workers: u64,
    pub events: usize,
    pub blocks: usize,
    pub resident_pairs: usize,
    pub resident_blocks: usize,
}

impl Summary {
    pub fn of(stream: &Stream) -> Summary {
        Summary {
            workers: stream.workers,
            events: stream.events,
            blocks: stream.blocks,
            resident_pairs: stream.resident_pairs,
            resident_blocks: stream.resident_blocks,
        }
    }
}

/// Print the table, the stream sizes and the ratios ours / best peer for each worker count.
/// `scale` is the number of trace copies replayed, `lookups` the requests of the replayed trace.
pub fn print(rows: &[Row], streams: &[Summary], scale: u64, lookups: usize) {
    println!(
        "| indexer | W | ingest events/s | ingest events/s (CPU time) | ingest blocks/s | lookup/s | lookup/s (median per request) | p50 ns | p99 ns | bytes/resident | wrong answers |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} / {lookups} |",
            row.name,
            row.workers,
            si(row.ingest_events_per_s),
            row.ingest_cpu_events_per_s.map_or("-".to_string(), si),
            si(row.ingest_blocks_per_s),
            si(row.lookups_per_s),
            si(row.lookups_per_s_median),
            row.p50_ns,
            row.p99_ns,
            row.bytes_per_resident,
            row.wrong_answers,
        );
    }
    println!();
    println!(
        "| scale | W | requests | events | blocks in events | resident (worker, block) pairs | resident distinct blocks | rejected events |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---|");
    for stream in streams {
        let rejected: Vec<String> = rows
            .iter()
            .filter(|row| row.workers == stream.workers)
            .map(|row| match row.rejected_events {
                Some(count) => format!("{}: {count}", short(row.name)),
                None => format!("{}: n/a", short(row.name)),
            })
            .collect();
        println!(
            "| {scale} | {} | {lookups} | {} | {} | {} | {} | {} |",
            stream.workers,
            stream.events,
            stream.blocks,
            stream.resident_pairs,
            stream.resident_blocks,
            rejected.join(", ")
        );
    }
    println!();
    print_depths(rows);
    println!();
    println!(
        "Footprint detail: bytes/resident above includes the empty index's fixed allocations."
    );
    println!();
    println!("| indexer | W | empty index bytes | bytes/resident over the empty index |");
    println!("|---|---:|---:|---:|");
    for row in rows {
        let resident = streams
            .iter()
            .find(|s| s.workers == row.workers)
            .map_or(1, |s| s.resident_pairs.max(1));
        let total = row.bytes_per_resident * resident as f64;
        println!(
            "| {} | {} | {} | {:.1} |",
            row.name,
            row.workers,
            row.empty_bytes,
            (total - row.empty_bytes as f64) / resident as f64,
        );
    }
    println!();
    println!(
        "Ours / best peer (ingest and lookups: above 1 is faster; bytes: below 1 is smaller):"
    );
    println!();
    println!(
        "| W | ingest events/s | ingest events/s (CPU time) | lookup/s | lookup/s (median per request) | bytes/resident |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for stream in streams {
        let workers = stream.workers;
        let here: Vec<&Row> = rows.iter().filter(|r| r.workers == workers).collect();
        let Some(ours) = here.iter().find(|r| r.name == Ours::NAME) else {
            continue;
        };
        // The diagnostic stand-ins are ours in part, not peers.
        let peers = here
            .iter()
            .filter(|r| r.name != Ours::NAME && !r.name.starts_with(DIAG_PREFIX));
        let best = |value: fn(&Row) -> f64, lowest: bool| {
            let values = peers.clone().map(|r| value(r));
            let best = if lowest {
                values.fold(f64::INFINITY, f64::min)
            } else {
                values.fold(0.0, f64::max)
            };
            value(ours) / best
        };
        println!(
            "| {workers} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            best(|r| r.ingest_events_per_s, false),
            best(|r| r.ingest_cpu_events_per_s.unwrap_or(f64::NAN), false),
            best(|r| r.lookups_per_s, false),
            best(|r| r.lookups_per_s_median, false),
            best(|r| r.bytes_per_resident, true),
        );
    }
}

/// The mean of the requests' median lookup times, by the request's deepest exact match.
fn print_depths(rows: &[Row]) {
    println!(
        "Lookup time by deepest match (mean over requests of each request's median, ns; requests in brackets):"
    );
    println!();
    let classes: Vec<String> = DEPTHS
        .iter()
        .map(|&(lo, hi)| match (lo, hi) {
            (0, 0) => "0 (first block missed)".to_string(),
            (lo, u32::MAX) => format!("{lo}+"),
            (lo, hi) => format!("{lo}-{hi}"),
        })
        .collect();
    println!("| indexer | W | {} |", classes.join(" | "));
    println!("|---|---:|{}", "---:|".repeat(classes.len()));
    for row in rows {
        let cells: Vec<String> = row
            .by_depth
            .iter()
            .map(|&(requests, mean)| format!("{mean:.0} ({requests})"))
            .collect();
        println!("| {} | {} | {} |", row.name, row.workers, cells.join(" | "));
    }
}

/// A value with an SI suffix, three significant digits.
fn si(value: f64) -> String {
    let (scaled, suffix) = if value >= 1e9 {
        (value / 1e9, "G")
    } else if value >= 1e6 {
        (value / 1e6, "M")
    } else if value >= 1e3 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let digits = if scaled >= 100.0 {
        0
    } else if scaled >= 10.0 {
        1
    } else {
        2
    };
    format!("{scaled:.digits$}{suffix}")
}

/// The indexer's type name alone, for the narrow column.
fn short(name: &str) -> &str {
    name.split_whitespace().nth(1).unwrap_or(name)
}
