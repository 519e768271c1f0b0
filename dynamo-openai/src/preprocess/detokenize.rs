//! Incremental detokenization: token ids arrive a few at a time, text leaves without ever
//! splitting a UTF-8 character.

use super::tokenizer::Tokenizer;
use crate::Error;

/// Turns token ids into text. [`Tokenizer`] is the real one; tests use simpler ones.
pub trait Decode {
    /// The text of `ids`, with special tokens left out. Bytes that do not form a whole
    /// character become U+FFFD. A tokenizer that fails reports it with [`Error::tokenizer`].
    fn decode_ids(&self, ids: &[u32]) -> Result<String, Error>;
}

impl Decode for Tokenizer {
    fn decode_ids(&self, ids: &[u32]) -> Result<String, Error> {
        self.decode(ids, true)
    }
}

/// The replacement character a decoder writes for bytes that are not (yet) a whole character.
const REPLACEMENT: char = '\u{FFFD}';

/// Decodes a growing token sequence into text deltas.
///
/// Byte-level tokenizers split multi-byte characters across tokens, and many tokenizers decode
/// a token differently depending on its left neighbour (a leading space, say). So each step
/// decodes a short window of recent ids twice, with and without the new ones, and emits the
/// difference, but only once the window's text no longer ends in an incomplete character
/// (U+FFFD). [`IncrementalDecoder::finish`] flushes whatever is held at the end.
///
/// The concatenation of every delta equals the one-shot decode of all ids.
///
/// ```
/// use dynamo_openai::{Decode, Error, IncrementalDecoder};
///
/// /// One token per byte.
/// struct Bytes;
/// impl Decode for Bytes {
///     fn decode_ids(&self, ids: &[u32]) -> Result<String, Error> {
///         let bytes: Vec<u8> = ids.iter().map(|&id| id as u8).collect();
///         Ok(String::from_utf8_lossy(&bytes).into_owned())
///     }
/// }
///
/// let mut decoder = IncrementalDecoder::default();
/// let euro = "€".as_bytes(); // three bytes, three tokens
/// assert_eq!(decoder.push(&Bytes, &[u32::from(euro[0])])?, "");
/// assert_eq!(decoder.push(&Bytes, &[u32::from(euro[1])])?, "");
/// assert_eq!(decoder.push(&Bytes, &[u32::from(euro[2]), u32::from(b'!')])?, "€!");
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct IncrementalDecoder {
    ids: Vec<u32>,
    /// Start of the window decoded for context.
    prefix_offset: usize,
    /// End of the text already emitted.
    read_offset: usize,
}

impl IncrementalDecoder {
    /// Add `new` ids; returns the text they complete (possibly empty).
    pub fn push(&mut self, decoder: &impl Decode, new: &[u32]) -> Result<String, Error> {
        self.ids.extend_from_slice(new);
        let (emitted, text) = self.window(decoder)?;
        if text.len() <= emitted.len() || text.ends_with(REPLACEMENT) {
            return Ok(String::new());
        }
        Ok(self.advance(text, emitted.len()))
    }

    /// Flush the text held back at the end of the sequence (incomplete characters become
    /// U+FFFD, as in the one-shot decode).
    pub fn finish(&mut self, decoder: &impl Decode) -> Result<String, Error> {
        let (emitted, text) = self.window(decoder)?;
        if text.len() <= emitted.len() {
            return Ok(String::new());
        }
        Ok(self.advance(text, emitted.len()))
    }

    /// Every id pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// The window's text without and with the ids not yet emitted.
    fn window(&self, decoder: &impl Decode) -> Result<(String, String), Error> {
        let emitted = decoder.decode_ids(&self.ids[self.prefix_offset..self.read_offset])?;
        let text = decoder.decode_ids(&self.ids[self.prefix_offset..])?;
        Ok((emitted, text))
    }

    fn advance(&mut self, mut text: String, emitted_len: usize) -> String {
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        match text.is_char_boundary(emitted_len) {
            true => text.split_off(emitted_len),
            // The context decoded differently once extended: emit the whole window's tail
            // from the first differing character.
            false => {
                let boundary = (0..emitted_len)
                    .rev()
                    .find(|&at| text.is_char_boundary(at))
                    .unwrap_or(0);
                text.split_off(boundary)
            }
        }
    }
}
