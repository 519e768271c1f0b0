//! Stop strings over a text stream, with hold-back.

use super::holdback::held_suffix_len;

/// Finds stop strings in streamed text.
///
/// Text that may be the beginning of a stop string is held back until later text decides:
/// either the stop string completes (the text before it is released and the stream ends) or it
/// does not (the held text is released). The client never sees any part of a stop string.
///
/// ```
/// use dynamo_openai::StopMatcher;
///
/// let mut stops = StopMatcher::new(vec!["\nUser:".to_owned()]);
/// assert_eq!(stops.push("Paris.\nU"), ("Paris.".to_owned(), false));
/// assert_eq!(stops.push("ser: and"), (String::new(), true));
/// ```
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    stopped: bool,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher {
            stops: stops.into_iter().filter(|stop| !stop.is_empty()).collect(),
            held: String::new(),
            stopped: false,
        }
    }

    /// Add text; returns the text that may be released and whether a stop string ended the
    /// stream. After a stop, further text is ignored.
    pub fn push(&mut self, text: &str) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        self.held.push_str(text);
        let first_stop = self
            .stops
            .iter()
            .filter_map(|stop| self.held.find(stop.as_str()))
            .min();
        if let Some(at) = first_stop {
            self.held.truncate(at);
            self.stopped = true;
            return (std::mem::take(&mut self.held), true);
        }
        let keep = held_suffix_len(&self.held, self.stops.iter().map(String::as_str));
        let held = self.held.split_off(self.held.len() - keep);
        (std::mem::replace(&mut self.held, held), false)
    }

    /// Release the text still held when the stream ends without a stop string.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Whether a stop string has been seen.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }
}
