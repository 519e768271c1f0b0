//! Detokenizer and stop-string properties: however the token stream is split into chunks, the
//! text the client gets equals the one-shot decode, cut before the first stop string.

use dynamo_openai::{Decode, IncrementalDecoder, StopMatcher, Tokenizer};
use proptest::prelude::*;

/// Text with multi-byte characters and likely stop strings.
fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("a"),
            Just("b"),
            Just(" "),
            Just("\n"),
            Just("é"),
            Just("€"),
            Just("🦀"),
            Just("</"),
            Just("END"),
            Just("EN"),
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

/// Cut `items` into consecutive chunks at the given (sorted, deduplicated) points.
fn chunks<T: Clone>(items: &[T], cuts: &[usize]) -> Vec<Vec<T>> {
    let mut points: Vec<usize> = cuts.iter().map(|&cut| cut % (items.len() + 1)).collect();
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for point in points.into_iter().chain([items.len()]) {
        out.push(items[start..point].to_vec());
        start = point;
    }
    out
}

/// The reference: decode everything at once, cut at the earliest stop string.
fn reference(tokenizer: &Tokenizer, ids: &[u32], stops: &[String]) -> String {
    let text = tokenizer.decode_ids(ids).unwrap_or_default();
    let cut = stops
        .iter()
        .filter_map(|stop| text.find(stop.as_str()))
        .min();
    match cut {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// What the gateway emits: incremental decode, then the stop matcher.
fn streamed(tokenizer: &Tokenizer, pieces: &[Vec<u32>], stops: &[String]) -> (String, Vec<String>) {
    let mut decoder = IncrementalDecoder::default();
    let mut matcher = StopMatcher::new(stops.to_vec());
    let (mut out, mut deltas) = (String::new(), Vec::new());
    for piece in pieces {
        let delta = decoder.push(tokenizer, piece).unwrap_or_default();
        deltas.push(delta.clone());
        let (released, stopped) = matcher.push(&delta);
        out.push_str(&released);
        if stopped {
            return (out, deltas);
        }
    }
    let tail = decoder.finish(tokenizer).unwrap_or_default();
    let (released, stopped) = matcher.push(&tail);
    out.push_str(&released);
    if !stopped {
        out.push_str(&matcher.finish());
    }
    (out, deltas)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_split_gives_the_one_shot_text(
        text in text(),
        cuts in proptest::collection::vec(0usize..200, 0..12),
        stops in proptest::collection::vec(prop_oneof![Just("END"), Just("</"), Just("é "), Just("🦀\n")], 0..3),
    ) {
        let tokenizer = Tokenizer::bytes();
        let ids = tokenizer.encode(&text).unwrap_or_default();
        let stops: Vec<String> = stops.into_iter().map(str::to_owned).collect();
        let (out, deltas) = streamed(&tokenizer, &chunks(&ids, &cuts), &stops);
        prop_assert_eq!(out, reference(&tokenizer, &ids, &stops));
        // Without stop strings, the deltas are exactly the text: no character is split,
        // repeated or replaced.
        let (whole, _) = streamed(&tokenizer, &chunks(&ids, &cuts), &[]);
        prop_assert_eq!(&whole, &text);
        let whole_characters = deltas.iter().all(|delta| !delta.contains(char::REPLACEMENT_CHARACTER));
        prop_assert!(whole_characters);
    }
}
