//! Predictors by name, for command lines and settings files.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Constant, HoltWinters, KalmanTrend, MovingAverage, Predictor};
use crate::Error;

/// Which predictor to use, with its one setting where it has one.
///
/// As text (`FromStr` and `Display`): `constant`, `moving_average` or `moving_average:WINDOW`,
/// `kalman`, `holt_winters` or `holt_winters:SEASON`. In JSON: `"constant"`, `"kalman"`,
/// `{"moving_average": {"window": 5}}`, `{"holt_winters": {"season": 24}}`.
///
/// ```
/// use dynamo_planner::predict::PredictorKind;
///
/// let kind: PredictorKind = "moving_average:3".parse()?;
/// assert_eq!(kind, PredictorKind::MovingAverage { window: 3 });
/// let mut predictor = kind.build();
/// for v in [1.0, 2.0, 3.0, 4.0] {
///     predictor.observe(v);
/// }
/// assert_eq!(predictor.predict(), 3.0);
/// # Ok::<(), dynamo_planner::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictorKind {
    /// [`Constant`]: the last value.
    Constant,
    /// [`MovingAverage`] over `window` values (default 5).
    MovingAverage {
        /// Values averaged.
        window: usize,
    },
    /// [`KalmanTrend`] with its default noise settings.
    Kalman,
    /// [`HoltWinters`] with a season of `season` intervals (default 24) and default smoothing.
    HoltWinters {
        /// Intervals per season.
        season: usize,
    },
}

impl Default for PredictorKind {
    /// [`PredictorKind::Constant`].
    fn default() -> Self {
        PredictorKind::Constant
    }
}

impl PredictorKind {
    /// Every kind's name, for help texts.
    pub const NAMES: [&'static str; 4] = ["constant", "moving_average", "kalman", "holt_winters"];

    /// A fresh predictor of this kind.
    pub fn build(&self) -> Box<dyn Predictor> {
        match *self {
            PredictorKind::Constant => Box::new(Constant::default()),
            PredictorKind::MovingAverage { window } => Box::new(MovingAverage::new(window)),
            PredictorKind::Kalman => Box::new(KalmanTrend::default()),
            PredictorKind::HoltWinters { season } => Box::new(HoltWinters::with_season(season)),
        }
    }
}

impl FromStr for PredictorKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let (name, setting) = match s.split_once(':') {
            Some((name, setting)) => (name.trim(), Some(setting.trim())),
            None => (s.trim(), None),
        };
        let number = |default: usize| -> Result<usize, Error> {
            match setting {
                None => Ok(default),
                Some(text) => match text.parse::<usize>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(Error::Setting {
                        setting: "predictor",
                        reason: format!("`{text}` in `{s}` is not a positive whole number"),
                    }),
                },
            }
        };
        let no_setting = |kind: PredictorKind| match setting {
            None => Ok(kind),
            Some(_) => Err(Error::Setting {
                setting: "predictor",
                reason: format!("`{name}` takes no setting, but `{s}` gives one"),
            }),
        };
        match name {
            "constant" => no_setting(PredictorKind::Constant),
            "kalman" => no_setting(PredictorKind::Kalman),
            "moving_average" => Ok(PredictorKind::MovingAverage { window: number(5)? }),
            "holt_winters" => Ok(PredictorKind::HoltWinters {
                season: number(24)?,
            }),
            _ => Err(Error::Setting {
                setting: "predictor",
                reason: format!("`{s}` is not one of {}", PredictorKind::NAMES.join(", ")),
            }),
        }
    }
}

impl fmt::Display for PredictorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PredictorKind::Constant => f.write_str("constant"),
            PredictorKind::MovingAverage { window } => write!(f, "moving_average:{window}"),
            PredictorKind::Kalman => f.write_str("kalman"),
            PredictorKind::HoltWinters { season } => write!(f, "holt_winters:{season}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_with_their_defaults() -> Result<(), Error> {
        assert_eq!(
            "constant".parse::<PredictorKind>()?,
            PredictorKind::Constant
        );
        assert_eq!("kalman".parse::<PredictorKind>()?, PredictorKind::Kalman);
        assert_eq!(
            "moving_average".parse::<PredictorKind>()?,
            PredictorKind::MovingAverage { window: 5 }
        );
        assert_eq!(
            "holt_winters:12".parse::<PredictorKind>()?,
            PredictorKind::HoltWinters { season: 12 }
        );
        Ok(())
    }

    #[test]
    fn bad_names_and_settings_are_errors() {
        for bad in [
            "arima",
            "kalman:3",
            "moving_average:0",
            "holt_winters:x",
            "",
        ] {
            assert!(bad.parse::<PredictorKind>().is_err(), "{bad}");
        }
    }

    #[test]
    fn text_and_json_round_trip() -> Result<(), Box<dyn std::error::Error>> {
        for kind in [
            PredictorKind::Constant,
            PredictorKind::MovingAverage { window: 7 },
            PredictorKind::Kalman,
            PredictorKind::HoltWinters { season: 24 },
        ] {
            assert_eq!(kind.to_string().parse::<PredictorKind>()?, kind);
            let json = serde_json::to_string(&kind)?;
            assert_eq!(serde_json::from_str::<PredictorKind>(&json)?, kind);
        }
        assert_eq!(serde_json::to_string(&PredictorKind::Kalman)?, "\"kalman\"");
        Ok(())
    }
}
