//! How far the arrival rate has recently risen above what the policy planned for.

use super::recent::Recent;

/// The errors of the planned arrival rate over a trailing window, and their upper quantile.
///
/// Each planning step plans for a base rate (the larger of the forecast and the last
/// interval's); the next interval shows how far the load rose above it. A load that moves
/// smoothly leaves small errors, a bursty one large errors: planning for the base rate plus
/// the `quantile` of the errors of the last `window_s` seconds keeps as much headroom as the
/// traffic has recently needed, and no more. Errors are kept in requests per second.
#[derive(Debug, Clone)]
pub(super) struct Surge {
    quantile: f64,
    errors: Recent,
    /// The base rate planned for at the last step.
    base: Option<f64>,
    /// How far the last interval's rate was from its plan (0 when it had none).
    last: f64,
    /// Whether the last interval's rate was below its plan.
    fell: bool,
}

impl Surge {
    /// Errors of the last `window_s` seconds, at their `quantile` (in `(0, 1]`).
    pub(super) fn new(window_s: f64, quantile: f64) -> Self {
        Surge {
            quantile,
            errors: Recent::new(window_s),
            base: None,
            last: 0.0,
            fell: false,
        }
    }

    /// Learn the interval that ended at `at_s`, whose arrival rate was `rate`.
    pub(super) fn observe(&mut self, at_s: f64, rate: f64) {
        let error = self.base.map_or(f64::NAN, |base| rate - base);
        self.last = if error.is_finite() { error.abs() } else { 0.0 };
        self.fell = error < 0.0;
        self.errors.push(at_s, error);
    }

    /// How far the last interval's rate was above or below the rate planned for it, in
    /// requests per second (0 when it had no plan).
    pub(super) fn last(&self) -> f64 {
        self.last
    }

    /// Whether the last interval's rate was below the rate planned for it.
    pub(super) fn fell(&self) -> bool {
        self.fell
    }

    /// Remember the base rate the policy plans for now; the next interval is judged by it.
    pub(super) fn planned(&mut self, base: f64) {
        self.base = base.is_finite().then_some(base.max(0.0));
    }

    /// The upper quantile of the errors in the window, in requests per second; 0 when the
    /// window holds none or the quantile is below 0 (the load fell short of the plan).
    pub(super) fn margin(&self) -> f64 {
        self.errors.quantile(self.quantile).unwrap_or(0.0).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `rates`, one a minute, each planned for `base`, from minute `from`.
    fn feed(s: &mut Surge, from: usize, rates: &[f64], base: f64) {
        for (i, &rate) in rates.iter().enumerate() {
            s.observe(((from + i + 1) * 60) as f64, rate);
            s.planned(base);
        }
    }

    #[test]
    fn a_steady_load_needs_no_margin() {
        let mut s = Surge::new(600.0, 0.9);
        feed(&mut s, 0, &[10.0; 20], 10.0);
        assert_eq!(s.margin(), 0.0);
    }

    #[test]
    fn bursts_leave_their_upper_quantile_for_the_window() {
        let mut s = Surge::new(600.0, 0.9);
        // The base is 2 req/s; one interval jumps to 12. The first interval has no plan to
        // be judged by: nine errors, one of 10 req/s, the nearest rank of 0.9 × 9.
        feed(
            &mut s,
            0,
            &[2.0, 2.0, 12.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0],
            2.0,
        );
        assert_eq!(s.margin(), 10.0);
        // Ten minutes of steady load later the burst has left the window.
        feed(&mut s, 10, &[2.0; 10], 2.0);
        assert_eq!(s.margin(), 0.0);
    }

    #[test]
    fn the_last_miss_counts_both_ways() {
        let mut s = Surge::new(600.0, 0.9);
        s.observe(60.0, 5.0);
        assert_eq!(s.last(), 0.0);
        s.planned(5.0);
        s.observe(120.0, 8.0);
        assert_eq!(s.last(), 3.0);
        s.planned(8.0);
        assert!(!s.fell());
        s.observe(180.0, 2.0);
        assert_eq!(s.last(), 6.0);
        assert!(s.fell());
        // Only the rise stays in the margin.
        assert_eq!(s.margin(), 3.0);
    }

    #[test]
    fn a_falling_load_gives_no_negative_margin() {
        let mut s = Surge::new(600.0, 0.9);
        for (i, rate) in [10.0, 8.0, 6.0, 4.0].into_iter().enumerate() {
            s.observe(i as f64 * 60.0, rate);
            s.planned(rate);
        }
        assert_eq!(s.margin(), 0.0);
    }
}
