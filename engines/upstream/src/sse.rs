//! An incremental decoder of server-sent events, as `text/event-stream` bodies carry them.
//!
//! Written here rather than taken from a crate because an upstream adapter needs two things
//! the small SSE crates do not give together: a bound on how much an event may grow before it
//! ends (a server that never sends a blank line must not exhaust memory), and a typed answer
//! when the connection ends in the middle of an event (a stream cut mid-chunk is a failed
//! attempt to retry elsewhere, never a short answer).

use bytes::{Buf, BytesMut};

/// Why the byte stream is not a well-formed event stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SseError {
    /// An event grew past the limit without ending.
    #[error("a server-sent event grew past {limit} bytes without ending")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The stream ended inside an event.
    #[error("the event stream ended in the middle of an event ({pending} bytes unterminated)")]
    Truncated {
        /// Bytes received after the last complete event.
        pending: usize,
    },
}

/// One event: its `event:` name, if any, and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field.
    pub event: Option<String>,
    /// The `data:` lines, joined by newlines.
    pub data: String,
}

/// Turns body bytes, as they arrive, into [`SseEvent`]s.
///
/// ```
/// use dynamo_upstream::SseDecoder;
///
/// let mut decoder = SseDecoder::new(1 << 20);
/// decoder.push(b"data: {\"a\"").unwrap();
/// assert!(decoder.next_event().is_none()); // not finished yet
/// decoder.push(b":1}\n\ndata: [DONE]\n\n").unwrap();
/// assert_eq!(decoder.next_event().unwrap().data, "{\"a\":1}");
/// assert_eq!(decoder.next_event().unwrap().data, "[DONE]");
/// assert!(decoder.finish().is_ok());
/// ```
#[derive(Debug)]
pub struct SseDecoder {
    buffer: BytesMut,
    limit: usize,
}

impl SseDecoder {
    /// A decoder whose events may be at most `limit` bytes long.
    pub fn new(limit: usize) -> Self {
        SseDecoder {
            buffer: BytesMut::new(),
            limit,
        }
    }

    /// Add bytes from the body.
    ///
    /// # Errors
    ///
    /// [`SseError::TooLarge`] when the unfinished event would pass the limit.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() > self.limit && self.event_end().is_none() {
            return Err(SseError::TooLarge { limit: self.limit });
        }
        Ok(())
    }

    /// The next complete event, if one has arrived. Events with no `data:` line (comments,
    /// keep-alives) are skipped.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            let (end, separator) = self.event_end()?;
            let raw = self.buffer.split_to(end);
            self.buffer.advance(separator);
            if let Some(event) = parse_event(&raw) {
                return Some(event);
            }
        }
    }

    /// Check that the stream ended between events.
    ///
    /// # Errors
    ///
    /// [`SseError::Truncated`] when bytes other than whitespace follow the last event.
    pub fn finish(&self) -> Result<(), SseError> {
        if self.buffer.iter().all(u8::is_ascii_whitespace) {
            Ok(())
        } else {
            Err(SseError::Truncated {
                pending: self.buffer.len(),
            })
        }
    }

    /// Where the first complete event ends, and the length of the blank line after it.
    fn event_end(&self) -> Option<(usize, usize)> {
        let bytes = &self.buffer[..];
        let mut at = 0;
        while let Some(offset) = bytes[at..].iter().position(|&b| b == b'\n' || b == b'\r') {
            let line_end = at + offset;
            let after = line_end + newline_len(&bytes[line_end..])?;
            match bytes.get(after) {
                Some(b'\n' | b'\r') => {
                    let blank = newline_len(&bytes[after..])?;
                    return Some((line_end, after - line_end + blank));
                }
                Some(_) => at = after,
                None => return None,
            }
        }
        None
    }
}

/// The length of the line ending at the start of `bytes`: 1 or 2 (`\r\n`), or `None` when a
/// `\r` is the last byte so far (a `\n` may follow).
fn newline_len(bytes: &[u8]) -> Option<usize> {
    match bytes {
        [b'\r', b'\n', ..] => Some(2),
        [b'\r'] => None,
        _ => Some(1),
    }
}

fn parse_event(raw: &[u8]) -> Option<SseEvent> {
    let text = String::from_utf8_lossy(raw);
    let mut data: Option<String> = None;
    let mut event = None;
    for line in text.split(['\n', '\r']) {
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => match &mut data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            "event" => event = Some(value.to_owned()),
            _ => {}
        }
    }
    data.map(|data| SseEvent { event, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(decoder: &mut SseDecoder) -> Vec<String> {
        std::iter::from_fn(|| decoder.next_event().map(|event| event.data)).collect()
    }

    #[test]
    fn events_split_anywhere_come_out_whole() {
        let stream = b"data: one\n\n: keep-alive\n\nevent: x\ndata: two\ndata: lines\r\n\r\ndata: [DONE]\n\n";
        for cut in 0..stream.len() {
            let mut decoder = SseDecoder::new(1024);
            decoder.push(&stream[..cut]).unwrap();
            let mut got = events(&mut decoder);
            decoder.push(&stream[cut..]).unwrap();
            got.extend(events(&mut decoder));
            assert_eq!(got, ["one", "two\nlines", "[DONE]"], "cut at {cut}");
            assert!(decoder.finish().is_ok());
        }
    }

    #[test]
    fn a_cut_stream_and_an_endless_event_are_errors() {
        let mut decoder = SseDecoder::new(1024);
        decoder.push(b"data: {\"choices\":[{\"te").unwrap();
        assert!(decoder.next_event().is_none());
        assert_eq!(decoder.finish(), Err(SseError::Truncated { pending: 22 }));
        let mut decoder = SseDecoder::new(8);
        assert_eq!(
            decoder.push(b"data: 0123456789"),
            Err(SseError::TooLarge { limit: 8 })
        );
    }
}
