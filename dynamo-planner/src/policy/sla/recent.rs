//! Figures of the last few minutes, and their quantiles.

use std::collections::VecDeque;

/// The most figures a [`Recent`] keeps, whatever its window: a bound on memory when
/// intervals are very short.
const MOST_FIGURES: usize = 4096;

/// The figures of a trailing window of time, each stamped with when it was seen.
#[derive(Debug, Clone)]
pub(super) struct Recent {
    window_s: f64,
    /// `(at_s, figure)`, oldest first.
    figures: VecDeque<(f64, f64)>,
}

impl Recent {
    /// Figures of the last `window_s` seconds (0: none are kept).
    pub(super) fn new(window_s: f64) -> Self {
        Recent {
            window_s,
            figures: VecDeque::new(),
        }
    }

    /// Add `figure`, seen at `at_s` (never before the last one), and forget what left the
    /// window by then. Figures that are not finite are left out.
    pub(super) fn push(&mut self, at_s: f64, figure: f64) {
        if figure.is_finite() {
            if self.figures.len() == MOST_FIGURES {
                self.figures.pop_front();
            }
            self.figures.push_back((at_s, figure));
        }
        let oldest = at_s - self.window_s;
        while self.figures.front().is_some_and(|&(at, _)| at <= oldest) {
            self.figures.pop_front();
        }
    }

    /// The window's `(at_s, figure)`, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.figures.iter().copied()
    }

    /// The figures in the window.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.figures.len()
    }

    /// The `q` quantile (nearest rank, `q` in `(0, 1]`) of the figures in the window; `None`
    /// when it holds none.
    pub(super) fn quantile(&self, q: f64) -> Option<f64> {
        let mut figures: Vec<f64> = self.figures.iter().map(|&(_, f)| f).collect();
        if figures.is_empty() {
            return None;
        }
        figures.sort_by(f64::total_cmp);
        // The smallest figure at or above the quantile's share of them.
        let rank = (q * figures.len() as f64).ceil() as usize;
        Some(figures[rank.clamp(1, figures.len()) - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank_over_the_window() {
        let mut r = Recent::new(100.0);
        for (i, f) in [5.0, 1.0, 4.0, 2.0, 3.0].into_iter().enumerate() {
            r.push(i as f64 * 10.0, f);
        }
        assert_eq!(r.quantile(1.0), Some(5.0));
        assert_eq!(r.quantile(0.5), Some(3.0));
        assert_eq!(r.quantile(0.01), Some(1.0));
        // At 125 s those seen at 25 s or before have left the window.
        r.push(125.0, 0.0);
        assert_eq!(r.len(), 3);
        assert_eq!(r.quantile(1.0), Some(3.0));
        r.push(125.0, f64::NAN);
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn an_empty_window_has_no_quantile() {
        let mut r = Recent::new(0.0);
        r.push(1.0, 3.0);
        assert_eq!(r.quantile(0.9), None);
    }

    #[test]
    fn memory_stays_bounded() {
        let mut r = Recent::new(f64::MAX);
        for i in 0..(MOST_FIGURES + 100) {
            r.push(i as f64, 1.0);
        }
        assert_eq!(r.len(), MOST_FIGURES);
    }
}
