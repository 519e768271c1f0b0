//! [`RestartBackoff`]: how long a pool waits before it starts workers again after a start
//! failed.

use std::time::Duration;

use tokio::time::Instant;

/// How a [`LocalProcesses`](super::LocalProcesses) pool spaces its tries after workers fail to
/// start: a worker that cannot be spawned, or that exits before discovery lists it, makes the
/// pool wait `first` before it starts another, then twice as long after each failed try, up to
/// `longest`. A worker that discovery lists ends the back-off. The defaults are a kubelet's
/// crash-loop back-off: 10 seconds, doubling to 5 minutes.
///
/// Workers that fail together (a pool scaled from 0 to 3 with a broken template) count as one
/// failed try; a worker that fails while the pool waits does not lengthen the wait.
///
/// ```
/// use std::time::Duration;
/// use dynamo_planner::local::RestartBackoff;
///
/// let backoff = RestartBackoff::default();
/// assert_eq!(backoff.wait_after(1), Duration::from_secs(10));
/// assert_eq!(backoff.wait_after(3), Duration::from_secs(40));
/// assert_eq!(backoff.wait_after(20), Duration::from_secs(300));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartBackoff {
    first: Duration,
    longest: Duration,
}

impl Default for RestartBackoff {
    fn default() -> Self {
        RestartBackoff::new(Duration::from_secs(10), Duration::from_secs(300))
    }
}

impl RestartBackoff {
    /// Wait `first` after one failed try, doubling after each further one up to `longest` (at
    /// least `first`).
    pub fn new(first: Duration, longest: Duration) -> Self {
        RestartBackoff {
            first,
            longest: longest.max(first),
        }
    }

    /// The wait after `failures` failed tries in a row (none after 0).
    pub fn wait_after(&self, failures: u32) -> Duration {
        let Some(doublings) = failures.checked_sub(1) else {
            return Duration::ZERO;
        };
        self.first
            .checked_mul(2u32.saturating_pow(doublings.min(31)))
            .map_or(self.longest, |wait| wait.min(self.longest))
    }
}

/// One pool's failed tries in a row, and until when it waits.
#[derive(Debug, Default)]
pub(super) struct Failures {
    in_a_row: u32,
    until: Option<Instant>,
}

impl Failures {
    /// Count a failed try at `now`, unless the pool is already waiting; the wait that follows.
    pub(super) fn failed(&mut self, policy: &RestartBackoff, now: Instant) -> Option<Duration> {
        if self.waiting(now).is_some() {
            return None;
        }
        self.in_a_row = self.in_a_row.saturating_add(1);
        let wait = policy.wait_after(self.in_a_row);
        self.until = Some(now + wait);
        Some(wait)
    }

    /// A worker started well: the next failure waits `first` again.
    pub(super) fn succeeded(&mut self) {
        *self = Failures::default();
    }

    /// How long the pool still waits at `now`, if it does.
    pub(super) fn waiting(&self, now: Instant) -> Option<Duration> {
        self.until
            .and_then(|until| until.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    /// End the wait now, keeping the count (tests stand in for the time passing).
    #[cfg(test)]
    pub(super) fn expire(&mut self) {
        self.until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_up_to_the_longest_and_a_success_resets_it() {
        let policy = RestartBackoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let waits: Vec<u64> = (0..6).map(|n| policy.wait_after(n).as_secs()).collect();
        assert_eq!(waits, [0, 1, 2, 4, 5, 5]);
        assert_eq!(policy.wait_after(u32::MAX), Duration::from_secs(5));

        let start = Instant::now();
        let mut failures = Failures::default();
        assert_eq!(
            failures.failed(&policy, start),
            Some(Duration::from_secs(1))
        );
        // A failure while waiting is part of the same try.
        let later = start + Duration::from_millis(500);
        assert_eq!(failures.failed(&policy, later), None);
        assert_eq!(failures.waiting(later), Some(Duration::from_millis(500)));
        let after = start + Duration::from_secs(1);
        assert_eq!(failures.waiting(after), None);
        assert_eq!(
            failures.failed(&policy, after),
            Some(Duration::from_secs(2))
        );
        failures.succeeded();
        assert_eq!(failures.waiting(after), None);
        assert_eq!(
            failures.failed(&policy, after),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn a_longest_below_the_first_wait_is_the_first() {
        let policy = RestartBackoff::new(Duration::from_secs(3), Duration::from_secs(1));
        assert_eq!(policy.wait_after(4), Duration::from_secs(3));
        let none = RestartBackoff::new(Duration::ZERO, Duration::ZERO);
        let mut failures = Failures::default();
        assert_eq!(failures.failed(&none, Instant::now()), Some(Duration::ZERO));
        assert_eq!(failures.waiting(Instant::now()), None);
    }
}
