//! An incremental decoder of server-sent events, as `text/event-stream` bodies carry them.
//!
//! Written here rather than taken from a crate because an upstream adapter needs two things
//! the small SSE crates do not give together: a bound on how much an event may grow before it
//! ends (a server that never sends a blank line must not exhaust memory), and a typed answer
//! when the connection ends in the middle of an event (a stream cut mid-chunk is a failed
//! attempt to retry elsewhere, never a short answer).

use std::borrow::Cow;

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
    /// Bytes at the front of `buffer` that belong to an event already handed out by
    /// [`next_data`](Self::next_data), dropped at the next call.
    consumed: usize,
}

impl SseDecoder {
    /// A decoder whose events may be at most `limit` bytes long.
    pub fn new(limit: usize) -> Self {
        SseDecoder {
            buffer: BytesMut::new(),
            limit,
            consumed: 0,
        }
    }

    /// Add bytes from the body.
    ///
    /// # Errors
    ///
    /// [`SseError::TooLarge`] when the unfinished event would pass the limit.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        self.drop_consumed();
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() > self.limit && self.event_end().is_none() {
            return Err(SseError::TooLarge { limit: self.limit });
        }
        Ok(())
    }

    /// The next complete event, if one has arrived. Events with no `data:` line (comments,
    /// keep-alives) are skipped.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        self.drop_consumed();
        loop {
            let (end, separator) = self.event_end()?;
            let event = parse_event(&self.buffer[..end]);
            self.buffer.advance(end + separator);
            if event.is_some() {
                return event;
            }
        }
    }

    /// The `data` of the next complete event, as [`next_event`](Self::next_event) gives it
    /// (without its `event:` name), borrowed from the decoder's buffer where it can be: an
    /// event of one `data:` line in UTF-8, as servers send JSON, is not copied.
    pub fn next_data(&mut self) -> Option<Cow<'_, str>> {
        self.drop_consumed();
        loop {
            let (end, separator) = self.event_end()?;
            if let Some(range) = single_data_line(&self.buffer[..end]) {
                self.consumed = end + separator;
                let line = &self.buffer[range];
                return Some(match std::str::from_utf8(line) {
                    Ok(text) => Cow::Borrowed(text),
                    Err(_) => String::from_utf8_lossy(line),
                });
            }
            let event = parse_event(&self.buffer[..end]);
            self.buffer.advance(end + separator);
            if let Some(event) = event {
                return Some(Cow::Owned(event.data));
            }
        }
    }

    /// Check that the stream ended between events.
    ///
    /// # Errors
    ///
    /// [`SseError::Truncated`] when bytes other than whitespace follow the last event.
    pub fn finish(&self) -> Result<(), SseError> {
        let pending = &self.buffer[self.consumed..];
        if pending.iter().all(u8::is_ascii_whitespace) {
            Ok(())
        } else {
            Err(SseError::Truncated {
                pending: pending.len(),
            })
        }
    }

    fn drop_consumed(&mut self) {
        self.buffer.advance(std::mem::take(&mut self.consumed));
    }

    /// Where the first complete event ends, and the length of the blank line after it.
    fn event_end(&self) -> Option<(usize, usize)> {
        let bytes = &self.buffer[..];
        let mut at = 0;
        while let Some(offset) = line_break(&bytes[at..]) {
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

/// Where the first `\n` or `\r` of `bytes` is (`memchr`'s vectorised search: a byte-by-byte one
/// was most of the decoder's time, an event being a line of JSON a few hundred bytes long).
fn line_break(bytes: &[u8]) -> Option<usize> {
    memchr::memchr2(b'\n', b'\r', bytes)
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

/// Where the value of `raw`'s one line is, when that line is a `data:` field: the common
/// event, whose data is that value as it stands.
fn single_data_line(raw: &[u8]) -> Option<std::ops::Range<usize>> {
    let value = raw.strip_prefix(b"data:")?;
    if line_break(value).is_some() {
        return None;
    }
    let skip = usize::from(value.first() == Some(&b' '));
    Some(raw.len() - value.len() + skip..raw.len())
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
    fn borrowed_data_is_the_events_data_wherever_the_stream_is_cut() {
        let stream = "data: {\"a\":1}\n\n: keep-alive\n\ndata:x\r\n\r\nevent: x\ndata: two\ndata: lines\n\n\
                      data\n\ndata: caf\u{e9} \u{1f600}\n\ndata: [DONE]\n\n";
        let mut bytes = stream.as_bytes().to_vec();
        // Bytes that are not UTF-8 read as U+FFFD, as in `next_event`.
        bytes.extend_from_slice(b"data: \xff\xfe!\n\n");
        let expected = [
            "{\"a\":1}",
            "x",
            "two\nlines",
            "",
            "caf\u{e9} \u{1f600}",
            "[DONE]",
            "\u{fffd}\u{fffd}!",
        ];
        for cut in 0..bytes.len() {
            let mut decoder = SseDecoder::new(1024);
            let mut got = Vec::new();
            decoder.push(&bytes[..cut]).unwrap();
            while let Some(data) = decoder.next_data() {
                got.push(data.into_owned());
            }
            decoder.push(&bytes[cut..]).unwrap();
            while let Some(data) = decoder.next_data() {
                got.push(data.into_owned());
            }
            assert_eq!(got, expected, "cut at {cut}");
            assert!(decoder.finish().is_ok());
            // The same events, one way or the other in turn.
            let mut decoder = SseDecoder::new(1024);
            decoder.push(&bytes).unwrap();
            let mut alternate = Vec::new();
            for turn in 0.. {
                let data = match turn % 2 {
                    0 => decoder.next_data().map(Cow::into_owned),
                    _ => decoder.next_event().map(|event| event.data),
                };
                let Some(data) = data else { break };
                alternate.push(data);
            }
            assert_eq!(alternate, expected);
        }
        // A cut after a borrowed event still counts only what follows it.
        let mut decoder = SseDecoder::new(1024);
        decoder.push(b"data: 1\n\ndata: 2").unwrap();
        assert_eq!(decoder.next_data().as_deref(), Some("1"));
        assert!(decoder.next_data().is_none());
        assert_eq!(decoder.finish(), Err(SseError::Truncated { pending: 7 }));
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
