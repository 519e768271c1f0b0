//! Invariants every predictor keeps, whatever the series.

use dynamo_planner::predict::{MovingAverage, Predictor, PredictorKind};
use proptest::prelude::*;

fn kinds() -> impl Strategy<Value = PredictorKind> {
    prop_oneof![
        Just(PredictorKind::Constant),
        (1usize..10).prop_map(|window| PredictorKind::MovingAverage { window }),
        Just(PredictorKind::Kalman),
        (1usize..8).prop_map(|season| PredictorKind::HoltWinters { season }),
    ]
}

proptest! {
    #[test]
    fn a_constant_series_is_forecast_as_itself(kind in kinds(), value in 0.0f64..1e5) {
        let mut p = kind.build();
        for _ in 0..200 {
            p.observe(value);
        }
        prop_assert!((p.predict() - value).abs() <= 1e-6 * value.max(1.0), "{kind}: {}", p.predict());
    }

    #[test]
    fn forecasts_stay_finite(kind in kinds(), values in prop::collection::vec(0.0f64..1e6, 0..100)) {
        let mut p = kind.build();
        for v in values {
            p.observe(v);
            prop_assert!(p.predict().is_finite());
        }
    }

    #[test]
    fn a_moving_average_stays_within_its_window(window in 1usize..10, values in prop::collection::vec(-1e6f64..1e6, 1..60)) {
        let mut p = MovingAverage::new(window);
        for v in &values {
            p.observe(*v);
        }
        let last = &values[values.len().saturating_sub(window)..];
        let lo = last.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = last.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let slack = 1e-9 * (lo.abs() + hi.abs() + 1.0);
        prop_assert!(p.predict() >= lo - slack && p.predict() <= hi + slack);
    }
}
