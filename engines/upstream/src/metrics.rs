//! Samples of the Prometheus text exposition format, as engines serve it on `/metrics`.
//!
//! Only what a load view needs: each sample line's name, labels and value. Written here rather
//! than taken from a crate because that is a few dozen lines, while the parsing crates on
//! crates.io are either unmaintained or bring a whole metrics client.

/// One sample line: `name{labels} value [timestamp]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample<'a> {
    /// The metric name (with a `_total`, `_sum`, … suffix where the line has one).
    pub name: &'a str,
    /// The text between the braces, empty when there are none.
    pub labels: &'a str,
    /// The value.
    pub value: f64,
}

impl Sample<'_> {
    /// The value of label `key`, unescaped.
    ///
    /// ```
    /// let text = "vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 3.0\n";
    /// let sample = dynamo_upstream::samples(text).next().unwrap();
    /// assert_eq!(sample.label("model_name").as_deref(), Some("m"));
    /// assert_eq!(sample.value, 3.0);
    /// ```
    pub fn label(&self, key: &str) -> Option<String> {
        let mut rest = self.labels;
        loop {
            rest = rest.trim_start_matches([',', ' ']);
            let (name, after) = rest.split_once('=')?;
            let after = after.strip_prefix('"')?;
            let end = closing_quote(after)?;
            let value = &after[..end];
            if name.trim() == key {
                return Some(value.replace("\\\"", "\"").replace("\\\\", "\\"));
            }
            rest = &after[end + 1..];
        }
    }
}

/// Every sample in `text`; comment lines and lines that do not parse are skipped.
pub fn samples(text: &str) -> impl Iterator<Item = Sample<'_>> {
    text.lines().filter_map(parse_line)
}

fn parse_line(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let (labels, rest) = match line[name_end..].strip_prefix('{') {
        Some(inside) => {
            let end = labels_end(inside)?;
            (&inside[..end], &inside[end + 1..])
        }
        None => ("", &line[name_end..]),
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        value => value.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The position of the `}` that closes a label set, skipping quoted values.
fn labels_end(inside: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (at, c) in inside.char_indices() {
        match (quoted, escaped, c) {
            (true, false, '\\') => escaped = true,
            (true, true, _) => escaped = false,
            (_, false, '"') => quoted = !quoted,
            (false, _, '}') => return Some(at),
            _ => {}
        }
    }
    None
}

fn closing_quote(value: &str) -> Option<usize> {
    let mut escaped = false;
    for (at, c) in value.char_indices() {
        match (escaped, c) {
            (false, '\\') => escaped = true,
            (false, '"') => return Some(at),
            _ => escaped = false,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_labels_and_values() {
        let text = "# HELP x help\n# TYPE x gauge\nx 0.37\n\
                    y{a=\"b}c\",d=\"e\\\"f\"} 2 1700000000000\nz{} +Inf\nbroken{a=\"1\" 3\n";
        let got: Vec<_> = samples(text).collect();
        assert_eq!(got.len(), 3);
        assert_eq!((got[0].name, got[0].value), ("x", 0.37));
        assert_eq!(got[1].label("a").as_deref(), Some("b}c"));
        assert_eq!(got[1].label("d").as_deref(), Some("e\"f"));
        assert_eq!(got[1].value, 2.0);
        assert!(got[2].value.is_infinite());
    }
}
