//! The one rule that stop strings and tag parsers share: text that could be the start of a
//! pattern is held until the next text decides.

/// The length in bytes of the longest suffix of `text` that is a proper prefix of one of
/// `patterns` (ending on a character boundary): the part to hold back.
pub(crate) fn held_suffix_len<'a>(
    text: &str,
    patterns: impl IntoIterator<Item = &'a str>,
) -> usize {
    let mut held = 0;
    for pattern in patterns {
        let longest = pattern.len().saturating_sub(1).min(text.len());
        for len in (held + 1..=longest).rev() {
            let start = text.len() - len;
            if text.is_char_boundary(start) && pattern.starts_with(&text[start..]) {
                held = len;
                break;
            }
        }
    }
    held
}

#[cfg(test)]
mod tests {
    use super::held_suffix_len;

    #[test]
    fn holds_the_longest_pattern_prefix() {
        assert_eq!(held_suffix_len("hello <th", ["<think>"]), 3);
        assert_eq!(held_suffix_len("hello <", ["<think>", "</think>"]), 1);
        assert_eq!(held_suffix_len("hello", ["<think>"]), 0);
        assert_eq!(held_suffix_len("ab", ["abc", "bcd"]), 2);
        assert_eq!(held_suffix_len("x€", ["€uro"]), 3);
        assert_eq!(held_suffix_len("<think>", ["<think>"]), 0);
    }
}
