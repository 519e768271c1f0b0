//! Reading a profile between its measured points.

use super::{DecodePoint, PerfProfile, Row};

/// `y` at `x` on the broken line through `points` (sorted by `x`), flat beyond its ends.
fn linear(points: impl Iterator<Item = (f64, f64)> + Clone, x: f64) -> f64 {
    let mut before: Option<(f64, f64)> = None;
    for (px, py) in points {
        if x <= px {
            return match before {
                Some((bx, by)) if px > bx => by + (py - by) * (x - bx) / (px - bx),
                _ => py,
            };
        }
        before = Some((px, py));
    }
    before.map_or(0.0, |(_, y)| y)
}

impl PerfProfile {
    /// Time to first token of a lone prompt of `input_tokens` uncached tokens, in milliseconds.
    ///
    /// Past the longest profiled prompt it adds the tokens beyond it at that prompt's
    /// throughput.
    pub fn prefill_ttft_ms(&self, input_tokens: f64) -> f64 {
        if let Some(last) = self.prefill.last()
            && input_tokens > last.input_tokens as f64
            && last.tokens_per_s > 0.0
        {
            let beyond = input_tokens - last.input_tokens as f64;
            return last.ttft_ms + 1000.0 * beyond / last.tokens_per_s;
        }
        let points = self
            .prefill
            .iter()
            .map(|p| (p.input_tokens as f64, p.ttft_ms));
        linear(points, input_tokens)
    }

    /// Prefill throughput of one worker on prompts of `input_tokens` uncached tokens, in
    /// prompt tokens per second.
    pub fn prefill_tokens_per_s(&self, input_tokens: f64) -> f64 {
        let points = self
            .prefill
            .iter()
            .map(|p| (p.input_tokens as f64, p.tokens_per_s));
        linear(points, input_tokens)
    }

    /// Time between output tokens of one worker decoding `concurrency` requests of
    /// `context_tokens` tokens each, in milliseconds.
    ///
    /// Past the longest profiled context it reads that context's row at the batch that holds
    /// as many tokens (see [`PerfProfile::decode_tokens_per_s_within`]).
    pub fn decode_itl_ms(&self, concurrency: f64, context_tokens: f64) -> f64 {
        if let Some((points, stretch)) = self.beyond_rows(context_tokens) {
            let points = points.iter().map(|p| (f64::from(p.concurrency), p.itl_ms));
            return linear(points, concurrency * stretch);
        }
        self.across_rows(context_tokens, |points| {
            linear(
                points.iter().map(|p| (f64::from(p.concurrency), p.itl_ms)),
                concurrency,
            )
        })
    }

    /// Decode throughput of one worker decoding `concurrency` requests of `context_tokens`
    /// tokens each, in output tokens per second.
    ///
    /// Past the longest profiled context: as [`PerfProfile::decode_itl_ms`].
    pub fn decode_tokens_per_s(&self, concurrency: f64, context_tokens: f64) -> f64 {
        if let Some((points, stretch)) = self.beyond_rows(context_tokens) {
            let points = points
                .iter()
                .map(|p| (f64::from(p.concurrency), p.tokens_per_s));
            return linear(points, concurrency * stretch) / stretch;
        }
        self.across_rows(context_tokens, |points| {
            let points = points
                .iter()
                .map(|p| (f64::from(p.concurrency), p.tokens_per_s));
            linear(points, concurrency)
        })
    }

    /// The best decode throughput of one worker, in output tokens per second, whose time
    /// between tokens stays within `itl_ms` at a context of `context_tokens` tokens.
    ///
    /// Along each measured context length it takes the highest throughput of the points
    /// within the target and of the points where the broken line through them crosses it;
    /// between context lengths it interpolates linearly. Where no batch size meets the
    /// target, it gives the throughput at the lowest measured ITL: the worker cannot do
    /// better, and a planner using it then counts every worker at its best.
    ///
    /// Past the longest profiled context, `s` times longer, it gives that context's figure
    /// over `s`: a decode step's cost and the KV cache both go by the tokens the batch holds,
    /// so a batch of contexts `s` times longer runs `s` times fewer requests in the same
    /// time. (Read flat, the last row would count a worker of 32k-token contexts as fast as
    /// one of 16k-token contexts, with twice the requests in its cache.)
    pub fn decode_tokens_per_s_within(&self, itl_ms: f64, context_tokens: f64) -> f64 {
        if let Some((points, stretch)) = self.beyond_rows(context_tokens) {
            return best_within(points, itl_ms) / stretch;
        }
        self.across_rows(context_tokens, |points| best_within(points, itl_ms))
    }

    /// The longest context's decode points, and how many times longer `context_tokens` is,
    /// when it is past them.
    fn beyond_rows(&self, context_tokens: f64) -> Option<(&[DecodePoint], f64)> {
        let last = self.rows.last()?;
        let longest = last.context_tokens as f64;
        (context_tokens > longest)
            .then(|| (&self.decode[last.start..last.end], context_tokens / longest))
    }

    /// `f` of the decode rows around `context_tokens`, interpolated between them.
    fn across_rows(&self, context_tokens: f64, f: impl Fn(&[DecodePoint]) -> f64) -> f64 {
        let points = |row: &Row| &self.decode[row.start..row.end];
        let above = self
            .rows
            .iter()
            .position(|row| context_tokens <= row.context_tokens as f64);
        match above {
            Some(0) => self.rows.first().map_or(0.0, |row| f(points(row))),
            Some(i) => {
                let (lo, hi) = (&self.rows[i - 1], &self.rows[i]);
                let (x0, x1) = (lo.context_tokens as f64, hi.context_tokens as f64);
                let w = (context_tokens - x0) / (x1 - x0);
                (1.0 - w) * f(points(lo)) + w * f(points(hi))
            }
            None => self.rows.last().map_or(0.0, |row| f(points(row))),
        }
    }
}

/// The highest throughput within `itl_ms` along one context length's points.
fn best_within(points: &[DecodePoint], itl_ms: f64) -> f64 {
    let mut best: Option<f64> = None;
    let mut keep = |v: f64| best = Some(best.map_or(v, |b: f64| b.max(v)));
    for (i, p) in points.iter().enumerate() {
        if p.itl_ms <= itl_ms {
            keep(p.tokens_per_s);
        }
        if let Some(next) = points.get(i + 1) {
            let (lo, hi) = (p.itl_ms.min(next.itl_ms), p.itl_ms.max(next.itl_ms));
            if lo < itl_ms && itl_ms < hi {
                let w = (itl_ms - p.itl_ms) / (next.itl_ms - p.itl_ms);
                keep(p.tokens_per_s + w * (next.tokens_per_s - p.tokens_per_s));
            }
        }
    }
    best.unwrap_or_else(|| {
        points
            .iter()
            .min_by(|a, b| a.itl_ms.total_cmp(&b.itl_ms))
            .map_or(0.0, |p| p.tokens_per_s)
    })
}
