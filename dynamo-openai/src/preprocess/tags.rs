//! Splitting streamed text at an opening and a closing tag (`<think>`…`</think>`,
//! `<tool_call>`…`</tool_call>`), holding back partial tags.

use super::holdback::held_suffix_len;

/// A piece of text, inside or outside the tags, or the end of a tagged section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Text outside the tags.
    Outside(String),
    /// Text inside the tags.
    Inside(String),
    /// A closing tag: the current tagged section ended.
    Closed,
}

/// A streaming splitter for one pair of tags.
#[derive(Debug, Clone)]
pub(crate) struct TagSplitter {
    open: &'static str,
    close: &'static str,
    inside: bool,
    held: String,
}

impl TagSplitter {
    pub(crate) fn new(open: &'static str, close: &'static str, start_inside: bool) -> Self {
        TagSplitter {
            open,
            close,
            inside: start_inside,
            held: String::new(),
        }
    }

    /// Split `text` (appended to what is held) into pieces.
    pub(crate) fn push(&mut self, text: &str) -> Vec<Piece> {
        self.held.push_str(text);
        let mut pieces = Vec::new();
        loop {
            let tag = if self.inside { self.close } else { self.open };
            match self.held.find(tag) {
                Some(at) => {
                    let rest = self.held.split_off(at + tag.len());
                    self.held.truncate(at);
                    self.emit(&mut pieces);
                    if self.inside {
                        pieces.push(Piece::Closed);
                    }
                    self.inside = !self.inside;
                    self.held = rest;
                }
                None => {
                    let keep = held_suffix_len(&self.held, [tag]);
                    let held = self.held.split_off(self.held.len() - keep);
                    self.emit(&mut pieces);
                    self.held = held;
                    return pieces;
                }
            }
        }
    }

    /// Release what is held at the end of the stream (a partial tag is plain text).
    pub(crate) fn finish(&mut self) -> Vec<Piece> {
        let mut pieces = Vec::new();
        self.emit(&mut pieces);
        pieces
    }

    fn emit(&mut self, pieces: &mut Vec<Piece>) {
        if self.held.is_empty() {
            return;
        }
        let text = std::mem::take(&mut self.held);
        pieces.push(match self.inside {
            true => Piece::Inside(text),
            false => Piece::Outside(text),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{Piece, TagSplitter};

    fn split(chunks: &[&str], start_inside: bool) -> Vec<Piece> {
        let mut splitter = TagSplitter::new("<think>", "</think>", start_inside);
        let mut pieces: Vec<Piece> = chunks
            .iter()
            .flat_map(|chunk| splitter.push(chunk))
            .collect();
        pieces.extend(splitter.finish());
        pieces
    }

    #[test]
    fn splits_across_chunk_boundaries() {
        let pieces = split(&["a<th", "ink>b</", "think>c"], false);
        assert_eq!(
            pieces,
            [
                Piece::Outside("a".into()),
                Piece::Inside("b".into()),
                Piece::Closed,
                Piece::Outside("c".into()),
            ]
        );
    }

    #[test]
    fn starts_inside_when_the_prompt_opened_the_tag() {
        let pieces = split(&["plan</think>", "answer"], true);
        assert_eq!(
            pieces,
            [
                Piece::Inside("plan".into()),
                Piece::Closed,
                Piece::Outside("answer".into()),
            ]
        );
    }

    #[test]
    fn a_partial_tag_at_the_end_is_text() {
        assert_eq!(
            split(&["a <thi"], false),
            [Piece::Outside("a ".into()), Piece::Outside("<thi".into())]
        );
    }
}
