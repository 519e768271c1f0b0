//! A fast path for GGUF byte-level BPE tokenizers, giving the same ids and text as the
//! `tokenizers` pipeline with less work per request:
//!
//! - encoding ASCII text splits it into words like the pipeline does (special tokens, then
//!   optionally one word per digit, then the GPT-2 split pattern) without a regex engine and
//!   without offset tables, and remembers the BPE model's ids of each word;
//! - decoding concatenates each id's bytes from a table built once.
//!
//! The GPT-2 pattern is
//! `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`. On ASCII,
//! `\p{L}` is `[A-Za-z]`, `\p{N}` is `[0-9]` and `\s` is space, `\t`, `\n`, `\v`, `\f`, `\r`, so
//! a byte scanner can follow it exactly. Text with any other character goes the library's way;
//! the property test at the bottom compares both on random text.

use std::collections::HashMap;
use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, MatchKind};
use parking_lot::{RwLock, RwLockReadGuard};
use tokenizers::Model;

use crate::Error;

/// How many words the fast path remembers; past that, new words are not remembered.
const WORD_CACHE_CAPACITY: usize = 65_536;

/// The fast path of one tokenizer.
#[derive(Debug)]
pub(super) struct FastBpe {
    splitter: AsciiSplitter,
    /// The ids of words seen so far, up to [`WORD_CACHE_CAPACITY`] words.
    words: RwLock<HashMap<Box<str>, Box<[u32]>, foldhash::fast::RandomState>>,
    /// The bytes of every id, and whether it is a special token.
    pieces: Vec<(Box<[u8]>, bool)>,
}

impl FastBpe {
    /// The fast path for a vocabulary (byte-level strings, ids in order) with these special
    /// tokens (`control[id]`).
    pub(super) fn new(tokens: &[&str], control: &[bool], split_digits: bool) -> Self {
        let is_control = |id: usize| control.get(id).copied().unwrap_or(false);
        let specials: Vec<(&str, u32)> = tokens
            .iter()
            .zip(0..)
            .filter(|&(_, id)| is_control(id as usize))
            .map(|(token, id)| (*token, id))
            .collect();
        let pieces = tokens
            .iter()
            .enumerate()
            .map(|(id, token)| (token_bytes(token, is_control(id)), is_control(id)))
            .collect();
        FastBpe {
            splitter: AsciiSplitter::new(&specials, split_digits),
            words: RwLock::default(),
            pieces,
        }
    }

    /// The ids of `text`, or `None` when the text is not ASCII and must take the general path.
    pub(super) fn encode(&self, model: &impl Model, text: &str) -> Option<Result<Vec<u32>, Error>> {
        let pieces = self.splitter.split(text)?;
        let mut ids = Vec::with_capacity(pieces.len() * 2);
        // One read lock for the whole text (a prompt has a word every few bytes, and each
        // lock and unlock moves the lock's cache line between the cores serving requests),
        // released only while a new word is learned.
        let mut known = self.words.read();
        for piece in pieces {
            match piece {
                Piece::Special(id) => ids.push(id),
                Piece::Word(word) => {
                    if let Some(known) = known.get(word) {
                        ids.extend_from_slice(known);
                        continue;
                    }
                    let learned = RwLockReadGuard::unlocked(&mut known, || {
                        let learned = bpe(model, word)?;
                        ids.extend_from_slice(&learned);
                        let mut words = self.words.write();
                        if words.len() < WORD_CACHE_CAPACITY {
                            words.insert(word.into(), learned);
                        }
                        Ok(())
                    });
                    if let Err(error) = learned {
                        return Some(Err(error));
                    }
                }
            }
        }
        Some(Ok(ids))
    }

    /// The bytes `id` stands for, if the vocabulary has it.
    pub(super) fn piece(&self, id: u32) -> Option<&[u8]> {
        self.pieces.get(id as usize).map(|(piece, _)| &piece[..])
    }

    /// The text of `ids`: unknown ids are left out, special tokens too when `skip_special`,
    /// and bytes that are not UTF-8 become U+FFFD.
    pub(super) fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            match self.pieces.get(id as usize) {
                Some((_, true)) if skip_special => {}
                Some((piece, _)) => bytes.extend_from_slice(piece),
                None => {}
            }
        }
        match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(error) => String::from_utf8_lossy(error.as_bytes()).into_owned(),
        }
    }
}

/// The BPE model's ids for one word.
fn bpe(model: &impl Model, word: &str) -> Result<Box<[u32]>, Error> {
    let mapped: String = word
        .bytes()
        .map(|byte| BYTE_LEVEL_CHARS[usize::from(byte)])
        .collect();
    let tokens = model.tokenize(&mapped).map_err(Error::tokenizer)?;
    Ok(tokens.iter().map(|token| token.id).collect())
}

/// The bytes a token stands for: a special token's own text; otherwise its characters mapped
/// back through the byte-level table, or, if one of them is not in the table, the token's own
/// UTF-8 (as the `tokenizers` byte-level decoder does).
pub(super) fn token_bytes(token: &str, special: bool) -> Box<[u8]> {
    if special {
        return token.as_bytes().into();
    }
    token
        .chars()
        .map(|c| BYTE_OF_CHAR.get(&c).copied())
        .collect::<Option<Box<[u8]>>>()
        .unwrap_or_else(|| token.as_bytes().into())
}

/// [`byte_level_char`] of every byte.
static BYTE_LEVEL_CHARS: LazyLock<[char; 256]> =
    LazyLock::new(|| std::array::from_fn(|byte| byte_level_char(byte as u8)));

/// The byte each byte-level character stands for.
static BYTE_OF_CHAR: LazyLock<HashMap<char, u8>> = LazyLock::new(|| {
    (0..=255u8)
        .map(|byte| (byte_level_char(byte), byte))
        .collect()
});

/// The character GPT-2's byte-level encoding writes for `byte`: printable Latin-1 bytes stand
/// for themselves, the other 68 are shifted to U+0100 and up, in order.
pub(super) fn byte_level_char(byte: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(byte) {
        return char::from(byte);
    }
    let shifted = (0..byte).filter(|&b| !printable(b)).count() as u32;
    char::from_u32(256 + shifted).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// One piece of a pre-tokenized text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece<'t> {
    /// A special token written in the text, as its id.
    Special(u32),
    /// A word for the BPE model (not yet byte-level mapped).
    Word(&'t str),
}

/// Splits ASCII text into special tokens and words.
#[derive(Debug, Clone)]
struct AsciiSplitter {
    specials: Option<AhoCorasick>,
    special_ids: Vec<u32>,
    split_digits: bool,
}

impl AsciiSplitter {
    /// A splitter for these special tokens (text and id), splitting digits one by one if asked.
    fn new(specials: &[(&str, u32)], split_digits: bool) -> Self {
        let texts: Vec<&str> = specials.iter().map(|(text, _)| *text).collect();
        let specials_matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&texts)
            .ok()
            .filter(|_| !texts.is_empty());
        AsciiSplitter {
            specials: specials_matcher,
            special_ids: specials.iter().map(|(_, id)| *id).collect(),
            split_digits,
        }
    }

    /// The pieces of `text`, or `None` when it is not ASCII (or a special token matcher could
    /// not be built), so that the caller takes the general path.
    fn split<'t>(&self, text: &'t str) -> Option<Vec<Piece<'t>>> {
        if !text.is_ascii() {
            return None;
        }
        let mut pieces = Vec::with_capacity(text.len() / 3 + 1);
        let mut start = 0;
        if let Some(specials) = &self.specials {
            for found in specials.find_iter(text) {
                self.split_plain(&text[start..found.start()], &mut pieces);
                pieces.push(Piece::Special(
                    *self.special_ids.get(found.pattern().as_usize())?,
                ));
                start = found.end();
            }
        }
        self.split_plain(&text[start..], &mut pieces);
        Some(pieces)
    }

    /// Text without special tokens: digits alone if asked, the GPT-2 pattern between them.
    fn split_plain<'t>(&self, text: &'t str, pieces: &mut Vec<Piece<'t>>) {
        if !self.split_digits {
            return gpt2_words(text, pieces);
        }
        let mut start = 0;
        for (at, byte) in text.bytes().enumerate() {
            if byte.is_ascii_digit() {
                gpt2_words(&text[start..at], pieces);
                pieces.push(Piece::Word(&text[at..=at]));
                start = at + 1;
            }
        }
        gpt2_words(&text[start..], pieces);
    }
}

/// The class of an ASCII byte in the GPT-2 pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
}

fn class(byte: u8) -> Class {
    match byte {
        b'A'..=b'Z' | b'a'..=b'z' => Class::Letter,
        b'0'..=b'9' => Class::Number,
        b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r' => Class::Space,
        _ => Class::Other,
    }
}

/// The length of an English contraction (`s`, `t`, `re`, `ve`, `m`, `ll`, `d`) at the start of
/// `rest`, the text after an apostrophe.
fn contraction(rest: &[u8]) -> Option<usize> {
    match rest {
        [b'r', b'e', ..] | [b'v', b'e', ..] | [b'l', b'l', ..] => Some(2),
        [b's' | b't' | b'm' | b'd', ..] => Some(1),
        _ => None,
    }
}

/// The GPT-2 pattern's matches in ASCII `text`, in order; together they cover the text.
fn gpt2_words<'t>(text: &'t str, pieces: &mut Vec<Piece<'t>>) {
    let bytes = text.as_bytes();
    let len = bytes.len();
    let mut at = 0;
    while at < len {
        let start = at;
        if bytes[at] == b'\''
            && let Some(n) = contraction(&bytes[at + 1..])
        {
            at += 1 + n;
            pieces.push(Piece::Word(&text[start..at]));
            continue;
        }
        // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional space, then a run of one class.
        let first = if bytes[at] == b' ' && at + 1 < len && class(bytes[at + 1]) != Class::Space {
            at + 1
        } else {
            at
        };
        let kind = class(bytes[first]);
        if kind != Class::Space {
            at = first + 1;
            while at < len && class(bytes[at]) == kind {
                at += 1;
            }
        } else {
            // `\s+(?!\S)` leaves the last space of a run for the next word; `\s+` takes a single
            // space that a word follows; a run at the end is taken whole.
            let mut end = at;
            while end < len && class(bytes[end]) == Class::Space {
                end += 1;
            }
            at = if end == len || end - at == 1 {
                end
            } else {
                end - 1
            };
        }
        pieces.push(Piece::Word(&text[start..at]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<&str> {
        let mut pieces = Vec::new();
        gpt2_words(text, &mut pieces);
        pieces
            .into_iter()
            .map(|piece| match piece {
                Piece::Word(word) => word,
                Piece::Special(_) => "<special>",
            })
            .collect()
    }

    #[test]
    fn follows_the_gpt2_pattern_on_hand_picked_cases() {
        assert_eq!(words("Hello world"), ["Hello", " world"]);
        assert_eq!(words("it's we're"), ["it", "'s", " we", "'re"]);
        assert_eq!(words("a  b"), ["a", " ", " b"]);
        assert_eq!(words("a\n\nb"), ["a", "\n", "\n", "b"]);
        assert_eq!(words("a \n b"), ["a", " \n", " b"]);
        assert_eq!(words("end  "), ["end", "  "]);
        assert_eq!(words("x!!'s"), ["x", "!!'", "s"]);
        assert_eq!(words(" 42 ?"), [" 42", " ?"]);
        assert_eq!(words("'S"), ["'", "S"]);
    }

    #[test]
    fn splits_special_tokens_and_digits_and_refuses_other_text() {
        let splitter = AsciiSplitter::new(&[("<|im_start|>", 1), ("<|im_end|>", 2)], true);
        let pieces = splitter.split("<|im_start|>user\nhi 12<|im_end|>");
        let expected = [
            Piece::Special(1),
            Piece::Word("user"),
            Piece::Word("\n"),
            Piece::Word("hi"),
            Piece::Word(" "),
            Piece::Word("1"),
            Piece::Word("2"),
            Piece::Special(2),
        ];
        assert_eq!(pieces.as_deref(), Some(&expected[..]));
        assert_eq!(splitter.split("héllo"), None);
    }
}
