//! How bursty the traffic is, learned from how latency grew with the load.

/// Intervals with more load than this per worker are left out of the fit: near and past
/// saturation a queue grows through the interval, and its latency says how long the
/// overload lasted, not how bursty the traffic is.
const MOST_RHO: f64 = 0.9;
/// Intervals with less load than this per worker say too little about queueing to learn from.
const LEAST_RHO: f64 = 0.05;
/// The largest excess (latency over its unloaded value, less one) one interval may contribute.
const MOST_EXCESS: f64 = 100.0;
/// `ρ / (1 − ρ)` of the prior's one observation.
const PRIOR_X: f64 = 0.5;
/// The range of the learned coefficient.
const RANGE: (f64, f64) = (0.05, 1000.0);

/// A queueing model of one pool's latency, with its variability learned from observations.
///
/// Kingman's approximation for a queue of utilisation `ρ` says the mean wait is
/// `ρ / (1 − ρ) × (c_a² + c_s²) / 2` service times, where the `c` are the coefficients of
/// variation of arrivals and service. Bursty arrivals (many requests at once, swings within a
/// planning interval) make that factor large; Poisson arrivals of similar requests make it
/// about 1. This type fits the factor `k` in
///
/// ```text
/// latency / unloaded latency − 1 = k × ρ / (1 − ρ)
/// ```
///
/// as the ratio of the sums of both sides over the intervals seen (`Σy / Σx`), each interval
/// weighed down by `memory` per second of age, and turns a latency target into the utilisation that meets it:
/// `ρ = x / (1 + x)` with `x = allowed excess / k`. Before any usable interval it knows
/// nothing, and sets no utilisation. The first interval joins a prior of a Poisson queue
/// (`k` 1) observed once at `ρ / (1 − ρ)` 0.5, which fades like any interval: one odd interval at a
/// low load cannot make the traffic look a hundred times burstier than a Poisson stream.
///
/// Why a ratio and not least squares: an interval's mean latency scatters more the nearer the
/// queue is to saturation, so the intervals at high `ρ` say the least about `k` per interval.
/// Least squares through the origin weighs each interval by `x²` and lets one near-saturated
/// interval (`x` 8.7 at `ρ` 0.897) outweigh one at `ρ` 0.43 a hundred to one; the ratio of
/// sums weighs them by `x`, the weights that suit a scatter growing in proportion to `x`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Variability {
    memory_s: f64,
    sx: f64,
    sy: f64,
}

impl Variability {
    /// A model that forgets an interval's weight by a factor `e` every `memory_s` seconds
    /// (0: only the last interval counts).
    pub(super) fn new(memory_s: f64) -> Self {
        Variability {
            memory_s,
            sx: 0.0,
            sy: 0.0,
        }
    }

    /// Learn an interval of `interval_s` seconds in which the pool ran at utilisation `rho`
    /// (load over profiled capacity) and its mean latency was `latency` against `unloaded`
    /// for the same requests on an idle worker.
    pub(super) fn observe(&mut self, interval_s: f64, rho: f64, latency: f64, unloaded: f64) {
        let usable = |v: f64| v.is_finite() && v > 0.0;
        if !usable(interval_s) || !usable(latency) || !usable(unloaded) || !rho.is_finite() {
            return;
        }
        if !(LEAST_RHO..=MOST_RHO).contains(&rho) {
            return;
        }
        let x = rho / (1.0 - rho);
        let y = (latency / unloaded - 1.0).clamp(0.0, MOST_EXCESS);
        let keep = if self.memory_s > 0.0 {
            (-interval_s / self.memory_s).exp()
        } else {
            0.0
        };
        if self.sx == 0.0 {
            // The prior: k = 1 at ρ / (1 − ρ) = PRIOR_X.
            (self.sx, self.sy) = (PRIOR_X, PRIOR_X);
        }
        self.sx = keep * self.sx + x;
        self.sy = keep * self.sy + y;
    }

    /// The learned factor (`None` before any usable interval).
    pub(super) fn k(&self) -> Option<f64> {
        (self.sx > 0.0).then(|| (self.sy / self.sx).clamp(RANGE.0, RANGE.1))
    }

    /// The utilisation at which the model expects the mean latency to exceed the unloaded
    /// one by `allowed` of it (for example 2: three times the unloaded latency).
    /// `None` before any usable interval.
    pub(super) fn utilisation(&self, allowed: f64) -> Option<f64> {
        let k = self.k()?;
        if !allowed.is_finite() || allowed <= 0.0 {
            return Some(0.0);
        }
        let x = allowed / k;
        Some(x / (1.0 + x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_like_traffic_learns_a_factor_near_one() {
        let mut v = Variability::new(600.0);
        // An M/M/1-like queue: latency = unloaded / (1 − ρ), an excess of ρ / (1 − ρ).
        for rho in [0.2, 0.5, 0.7, 0.4] {
            v.observe(60.0, rho, 100.0 / (1.0 - rho), 100.0);
        }
        assert!((v.k().unwrap_or(0.0) - 1.0).abs() < 1e-9, "{:?}", v.k());
        // Twice the unloaded latency allowed: ρ / (1 − ρ) = 2, ρ = 2/3.
        assert!((v.utilisation(2.0).unwrap_or(0.0) - 2.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn bursty_traffic_lowers_the_utilisation_it_allows() {
        let mut v = Variability::new(600.0);
        // Ten times the excess of a Poisson queue at the same load, for an hour: the prior
        // has faded.
        for _ in 0..20 {
            for rho in [0.1, 0.2, 0.3] {
                v.observe(60.0, rho, 100.0 * (1.0 + 10.0 * rho / (1.0 - rho)), 100.0);
            }
        }
        assert!((v.k().unwrap_or(0.0) - 10.0).abs() < 0.05, "{:?}", v.k());
        assert!((v.utilisation(2.0).unwrap_or(0.0) - 0.2 / 1.2).abs() < 1e-3);
    }

    #[test]
    fn one_odd_interval_at_low_load_is_weighed_against_the_prior() {
        let mut v = Variability::new(600.0);
        // Five times the unloaded latency at 10% load: alone it would say k = 36; with the
        // prior (k = 1 at ρ / (1 − ρ) = 0.5, faded by e^−0.1 over the interval) it says
        // (0.452 + 4) / (0.452 + 1 / 9) = 7.90.
        v.observe(60.0, 0.1, 500.0, 100.0);
        let k = v.k().unwrap_or(0.0);
        assert!((k - 7.90).abs() < 0.01, "{k}");
    }

    #[test]
    fn old_intervals_fade() {
        let mut v = Variability::new(60.0);
        v.observe(60.0, 0.5, 100.0 * 11.0, 100.0);
        for _ in 0..20 {
            v.observe(60.0, 0.5, 200.0, 100.0);
        }
        assert!((v.k().unwrap_or(0.0) - 1.0).abs() < 1e-3, "{:?}", v.k());
    }

    #[test]
    fn idle_or_unusable_intervals_teach_nothing() {
        let mut v = Variability::new(600.0);
        v.observe(60.0, 0.001, 5000.0, 100.0);
        v.observe(60.0, f64::NAN, 5000.0, 100.0);
        v.observe(60.0, 0.5, f64::INFINITY, 100.0);
        v.observe(0.0, 0.5, 5000.0, 100.0);
        assert_eq!(v.k(), None);
        assert_eq!(v.utilisation(2.0), None);
    }
}
