//! Whether a series of figures falls along a straight line: a trend its scatter cannot explain.

/// Student's t at one-sided 95% for 1 to 30 degrees of freedom; past 30, the normal's 1.645.
const T_95: [f64; 30] = [
    6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812, 1.796, 1.782, 1.771,
    1.761, 1.753, 1.746, 1.740, 1.734, 1.729, 1.725, 1.721, 1.717, 1.714, 1.711, 1.708, 1.706,
    1.703, 1.701, 1.699, 1.697,
];

/// Whether `points` (`(at_s, figure)`) fall along a line whose slope is negative at 95%
/// confidence: the least-squares slope is below zero by more than Student's t (one-sided, at
/// `n − 2` degrees of freedom) times its standard error. Three points at least; points that
/// are not finite are left out.
///
/// A load that falls this way is leaving the level it had at the start of the window, and
/// the window's largest figure says little about what comes next; a load that merely
/// scatters about a level (a steady trace's noise) shows no such slope, and its largest
/// figure is what recurs.
pub(super) fn falls(points: impl IntoIterator<Item = (f64, f64)>) -> bool {
    let points: Vec<(f64, f64)> = points
        .into_iter()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let n = points.len();
    if n < 3 {
        return false;
    }
    let count = n as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / count;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / count;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if sxx <= 0.0 {
        return false;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let slope = sxy / sxx;
    if slope >= 0.0 {
        return false;
    }
    let residuals: f64 = points
        .iter()
        .map(|p| (p.1 - mean_y - slope * (p.0 - mean_x)).powi(2))
        .sum();
    let df = n - 2;
    let standard_error = (residuals / df as f64 / sxx).sqrt();
    let t = T_95.get(df - 1).copied().unwrap_or(1.645);
    // A perfect line has no scatter: any fall is significant.
    -slope > t * standard_error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(figures: &[f64]) -> Vec<(f64, f64)> {
        figures
            .iter()
            .enumerate()
            .map(|(i, &f)| (i as f64 * 60.0, f))
            .collect()
    }

    #[test]
    fn a_steady_fall_is_a_trend() {
        assert!(falls(series(&[8.0, 7.0, 6.0, 5.0, 4.0])));
        // Scatter about a fall of about one a minute: t ≈ 10 over 3 degrees of freedom.
        assert!(falls(series(&[8.3, 6.7, 6.3, 4.7, 4.0])));
    }

    #[test]
    fn scatter_about_a_level_is_not() {
        assert!(!falls(series(&[4.0, 3.1, 4.4, 3.5, 3.9])));
        // The last figure lower than the first, but the scatter explains it: the slope is
        // −0.16 a minute and its standard error 0.16 (t ≈ 0.97 against 2.35).
        assert!(!falls(series(&[4.4, 3.1, 4.0, 3.5, 3.4])));
    }

    #[test]
    fn a_rise_or_too_few_points_is_not() {
        assert!(!falls(series(&[1.0, 2.0, 3.0, 4.0])));
        assert!(!falls(series(&[4.0, 3.0])));
        assert!(!falls(series(&[])));
        // The same instant twice says nothing about a slope.
        assert!(!falls([(5.0, 4.0), (5.0, 3.0), (5.0, 2.0)]));
    }

    #[test]
    fn figures_that_are_not_finite_are_left_out() {
        let mut points = series(&[8.0, 7.0, 6.0, 5.0]);
        points.push((240.0, f64::NAN));
        assert!(falls(points));
    }

    #[test]
    fn a_peak_then_a_fall_is_not_yet_a_trend() {
        // A sine's top: up, then down, about as far each way.
        assert!(!falls(series(&[6.0, 7.5, 8.0, 7.5, 6.0])));
    }
}
