//! [`Frontends`]: which frontends the planner hears, so that an interval's traffic is known to
//! be whole before the SLA policies plan from it.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::frontend::TRAFFIC_EVERY;

/// How long a frontend counts as heard after its last traffic report: three of its periods.
const HEARD_FOR: Duration = TRAFFIC_EVERY.saturating_mul(3);

/// Planning steps at which a frontend may go unheard, each marked unheard, before it is taken as
/// gone (stopped, or scaled down) and the plan goes on from the others' traffic.
const STEPS_UNHEARD_BEFORE_GONE: u32 = 3;

/// The frontends heard since the planner started, each with when it was last heard.
#[derive(Debug, Default)]
pub(crate) struct Frontends {
    known: HashMap<u64, Known>,
}

#[derive(Debug)]
struct Known {
    last_heard: Instant,
    steps_unheard: u32,
}

/// Whether the traffic of a planning step is whole.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Heard {
    /// Every frontend known was heard lately.
    All,
    /// No frontend was heard lately: none is known, or every one known went quiet.
    None,
    /// These frontends, heard before, went quiet: the traffic of the others is a part.
    Missing(Vec<u64>),
}

impl Frontends {
    /// `frontend` reported its traffic at `now`.
    pub(crate) fn heard(&mut self, frontend: u64, now: Instant) {
        self.known.insert(
            frontend,
            Known {
                last_heard: now,
                steps_unheard: 0,
            },
        );
    }

    /// `frontend` said it stops (its last report): forget it now rather than wait for it.
    pub(crate) fn left(&mut self, frontend: u64) {
        self.known.remove(&frontend);
    }

    /// At a planning step at `now`: which frontends were heard lately. A frontend unheard
    /// at more than [`STEPS_UNHEARD_BEFORE_GONE`] steps in a row is forgotten (with a
    /// warning) and counts as heard no more.
    pub(crate) fn step(&mut self, now: Instant) -> Heard {
        let mut missing = Vec::new();
        self.known.retain(|&frontend, known| {
            if now.saturating_duration_since(known.last_heard) <= HEARD_FOR {
                return true;
            }
            known.steps_unheard += 1;
            if known.steps_unheard > STEPS_UNHEARD_BEFORE_GONE {
                tracing::warn!(
                    frontend,
                    "planner: a frontend still quiet after {STEPS_UNHEARD_BEFORE_GONE} steps is \
                     taken as gone; planning from the traffic of the others"
                );
                return false;
            }
            missing.push(frontend);
            true
        });
        missing.sort_unstable();
        if missing.len() == self.known.len() {
            Heard::None
        } else if missing.is_empty() {
            Heard::All
        } else {
            Heard::Missing(missing)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two frontends report; one goes quiet. It is missing from the steps after its last
    /// report has aged, three of them, then taken as gone; a report makes it known again.
    #[test]
    fn a_quiet_frontend_is_missing_for_three_steps_then_gone() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut frontends = Frontends::default();
        assert_eq!(frontends.step(at(0)), Heard::None, "none known yet");
        frontends.heard(1, at(1));
        frontends.heard(2, at(1));
        assert_eq!(frontends.step(at(4)), Heard::All, "heard 3 s ago");
        frontends.heard(1, at(9));
        assert_eq!(frontends.step(at(10)), Heard::Missing(vec![2]));
        frontends.heard(1, at(19));
        assert_eq!(frontends.step(at(20)), Heard::Missing(vec![2]));
        frontends.heard(1, at(29));
        assert_eq!(frontends.step(at(30)), Heard::Missing(vec![2]));
        frontends.heard(1, at(39));
        assert_eq!(frontends.step(at(40)), Heard::All, "2 is gone");
        frontends.heard(2, at(45));
        frontends.heard(1, at(49));
        assert_eq!(
            frontends.step(at(50)),
            Heard::Missing(vec![2]),
            "2 known again"
        );
    }

    /// A frontend that said it stops is not waited for.
    #[test]
    fn a_frontend_that_left_is_not_missing() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut frontends = Frontends::default();
        frontends.heard(1, at(0));
        frontends.heard(2, at(0));
        frontends.left(2);
        frontends.heard(1, at(9));
        assert_eq!(frontends.step(at(10)), Heard::All);
    }

    /// Every frontend quiet is no frontend heard, until they are gone; a frontend heard again
    /// is heard whole at once.
    #[test]
    fn every_frontend_quiet_is_none_heard() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut frontends = Frontends::default();
        frontends.heard(7, at(0));
        assert_eq!(frontends.step(at(10)), Heard::None);
        frontends.heard(7, at(11));
        assert_eq!(frontends.step(at(12)), Heard::All);
    }
}
