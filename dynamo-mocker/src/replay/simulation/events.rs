//! The simulation's events, and the key that orders the workers' steps among them.

use std::cmp::Ordering;

#[derive(Debug, Clone, Copy)]
pub(super) enum Event {
    /// An arrival that waited for the concurrency cap.
    Arrival(usize),
    /// `config.membership[i]`.
    Membership(usize),
    Deliver(usize),
    /// A worker's copy from its host tier ends: it may have work again.
    Wake(usize),
    /// A request's KV reaches its decode worker.
    Handoff(usize),
    /// A planning step.
    Plan,
    /// A worker the planner asked for has started.
    Ready(usize),
    /// Router replicas' messages arrive.
    Share,
}

#[derive(Debug)]
pub(super) struct Scheduled {
    pub(super) at_ms: f64,
    pub(super) order: u64,
    pub(super) event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed, so that the max-heap pops the earliest event (ties: the first scheduled).
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .at_ms
            .total_cmp(&self.at_ms)
            .then(other.order.cmp(&self.order))
    }
}

/// The [`Simulation::dues`] entry of a worker with no step in progress.
pub(super) const IDLE: u128 = u128::MAX;

/// A step's end as one integer that orders like its time (by `f64::total_cmp`), then its place
/// in the event order.
pub(super) fn due_key(at_ms: f64, order: u64) -> u128 {
    let bits = at_ms.to_bits();
    // Negative numbers reverse their order; positive ones go above them.
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    };
    u128::from(ordered) << 64 | u128::from(order)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Keys order steps as comparing (time, order) would, negative times and zeros
        /// included.
        #[test]
        fn due_keys_order_like_time_then_order(
            a in prop_oneof![any::<f64>().prop_filter("a number", |x| !x.is_nan()), Just(0.0), Just(-0.0)],
            b in prop_oneof![any::<f64>().prop_filter("a number", |x| !x.is_nan()), Just(0.0), Just(-0.0)],
            order_a in 0u64..4,
            order_b in 0u64..4,
        ) {
            let expected = a.total_cmp(&b).then(order_a.cmp(&order_b));
            prop_assert_eq!(due_key(a, order_a).cmp(&due_key(b, order_b)), expected);
            prop_assert!(due_key(a, order_a) < IDLE);
        }
    }
}
