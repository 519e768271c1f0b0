//! The bounded queue of requests waiting for a worker that is not busy.

use std::collections::BTreeMap;

/// The order in which waiting requests are served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QueueOrder {
    /// First come, first served (within a priority).
    #[default]
    Fcfs,
    /// The request with the fewest prompt tokens left to compute (after the best cached
    /// prefix) first: short work clears the queue fastest and lowers mean time to first
    /// token. Long prompts can wait behind a steady stream of short ones; bound the wait with
    /// a timeout layer if that matters.
    ShortestUncachedFirst,
}

/// A waiting request's place: priority first (lower is served first, as in vLLM), then the
/// order's key, then arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct QueuePosition {
    priority: i32,
    work: u64,
    arrival: u64,
}

/// A bounded priority queue of waiting items.
///
/// `push` fails when the queue holds `capacity` items; an item taken out by `pop` and put back
/// with `push_back` keeps its place and is always accepted, so a request that was woken but
/// found every worker busy again does not lose its turn.
///
/// ```
/// use dynamo_router::{QueueOrder, WaitQueue};
///
/// let mut queue = WaitQueue::new(QueueOrder::ShortestUncachedFirst, 2);
/// queue.push(0, 900, "long")?;
/// queue.push(0, 100, "short")?;
/// assert!(queue.push(0, 50, "third").is_err(), "full");
/// assert_eq!(queue.pop().map(|(_, item)| item), Some("short"));
/// # Ok::<(), dynamo_router::QueueFull<&str>>(())
/// ```
#[derive(Debug)]
pub struct WaitQueue<T> {
    order: QueueOrder,
    capacity: usize,
    entries: BTreeMap<QueuePosition, T>,
    arrivals: u64,
}

/// The queue was full; the item is handed back.
#[derive(Debug, thiserror::Error)]
#[error("the wait queue is full")]
pub struct QueueFull<T>(pub T);

impl<T> WaitQueue<T> {
    /// An empty queue that holds at most `capacity` items.
    pub fn new(order: QueueOrder, capacity: usize) -> Self {
        WaitQueue {
            order,
            capacity,
            entries: BTreeMap::new(),
            arrivals: 0,
        }
    }

    /// Add an item with its priority and its uncached prompt tokens.
    ///
    /// # Errors
    ///
    /// [`QueueFull`] with the item, when the queue holds `capacity` items.
    pub fn push(
        &mut self,
        priority: i32,
        uncached_tokens: u64,
        item: T,
    ) -> Result<QueuePosition, QueueFull<T>> {
        if self.entries.len() >= self.capacity {
            return Err(QueueFull(item));
        }
        let work = match self.order {
            QueueOrder::Fcfs => 0,
            QueueOrder::ShortestUncachedFirst => uncached_tokens,
        };
        let position = QueuePosition {
            priority,
            work,
            arrival: self.arrivals,
        };
        self.arrivals += 1;
        self.entries.insert(position, item);
        Ok(position)
    }

    /// Put an item back at the place it had.
    pub fn push_back(&mut self, position: QueuePosition, item: T) {
        self.entries.insert(position, item);
    }

    /// Take the item to serve next.
    pub fn pop(&mut self) -> Option<(QueuePosition, T)> {
        self.entries.pop_first()
    }

    /// Take a waiting item out, for example because its request was cancelled.
    pub fn remove(&mut self, position: QueuePosition) -> Option<T> {
        self.entries.remove(&position)
    }

    /// The number of waiting items.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The most items the queue accepts.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fcfs_serves_by_priority_then_arrival_and_keeps_places() {
        let mut queue = WaitQueue::new(QueueOrder::Fcfs, 3);
        queue.push(0, 500, 'a').unwrap();
        queue.push(0, 1, 'b').unwrap();
        queue.push(-1, 900, 'c').unwrap();
        let (c, item) = queue.pop().unwrap();
        assert_eq!(item, 'c');
        let (a, item) = queue.pop().unwrap();
        assert_eq!(item, 'a');
        queue.push(0, 0, 'd').unwrap();
        queue.push(0, 0, 'e').unwrap();
        assert!(queue.push(0, 0, 'f').is_err());
        // A woken item put back keeps its place, even over capacity.
        queue.push_back(a, 'a');
        queue.push_back(c, 'c');
        assert_eq!(queue.len(), 5);
        let order: Vec<char> = std::iter::from_fn(|| queue.pop().map(|(_, x)| x)).collect();
        assert_eq!(order, ['c', 'a', 'b', 'd', 'e']);
    }
}
