//! Where requests wait while every worker is busy, and how they are woken.

use std::pin::pin;
use std::sync::OnceLock;
use std::task::Waker;

use dynamo_core::Error;
use futures::future::{Either, select};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::queue::{QueueOrder, QueuePosition, WaitQueue};

/// The bounded queue of waiting requests, each with the sender that wakes it; and the tasks
/// waiting for the router to become ready.
#[derive(Debug)]
pub(super) struct WaitingRoom {
    queue: Mutex<WaitQueue<oneshot::Sender<()>>>,
    /// Woken, all of them, whenever capacity may have come back.
    readiness: Mutex<Vec<Waker>>,
    /// The `dynamo_router_queue_depth` gauge, resolved from the recorder at the queue's first
    /// change (as `metrics::gauge!` would resolve it then) and reused after, so that a change
    /// sets it without a look-up in the recorder's registry.
    depth: OnceLock<metrics::Gauge>,
}

impl WaitingRoom {
    pub(super) fn new(order: QueueOrder, capacity: usize) -> Self {
        WaitingRoom {
            queue: Mutex::new(WaitQueue::new(order, capacity)),
            readiness: Mutex::new(Vec::new()),
            depth: OnceLock::new(),
        }
    }

    /// Whether a request that finds every worker busy would get a place.
    pub(super) fn has_room(&self) -> bool {
        let queue = self.queue.lock();
        queue.len() < queue.capacity()
    }

    /// Wake `waker` at the next release of capacity.
    pub(super) fn wake_when_ready(&self, waker: &Waker) {
        let mut wakers = self.readiness.lock();
        if !wakers.iter().any(|known| known.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }

    fn wake_ready(&self) {
        let wakers = std::mem::take(&mut *self.readiness.lock());
        for waker in wakers {
            waker.wake();
        }
    }

    pub(super) fn len(&self) -> usize {
        self.queue.lock().len()
    }

    pub(super) fn capacity(&self) -> usize {
        self.queue.lock().capacity()
    }

    /// Take a place in the queue, or go back to the place `ticket` names; `None` when a new
    /// request finds the queue full.
    pub(super) fn enter(
        &self,
        priority: i32,
        uncached_tokens: u64,
        ticket: &mut Option<QueuePosition>,
    ) -> Option<Waiting<'_>> {
        let (wake, woken) = oneshot::channel();
        let mut queue = self.queue.lock();
        let position = match *ticket {
            Some(position) => {
                queue.push_back(position, wake);
                position
            }
            None => queue.push(priority, uncached_tokens, wake).ok()?,
        };
        *ticket = Some(position);
        self.set_depth(queue.len());
        Some(Waiting {
            room: self,
            position,
            woken,
            was_woken: false,
        })
    }

    /// Wake the request to serve next, skipping requests that stopped waiting, and the tasks
    /// waiting for readiness; called whenever capacity may have come back.
    pub(super) fn wake_next(&self) {
        {
            let mut queue = self.queue.lock();
            while let Some((_, wake)) = queue.pop() {
                if wake.send(()).is_ok() {
                    break;
                }
            }
            self.set_depth(queue.len());
        }
        self.wake_ready();
    }

    fn set_depth(&self, depth: usize) {
        self.depth
            .get_or_init(|| metrics::gauge!("dynamo_router_queue_depth"))
            .set(depth as f64);
    }
}

/// One request's place in the queue.
///
/// # Cancel safety
///
/// Dropping it leaves the queue: the place is removed, and if the request had already been
/// woken without using the wake-up, the next waiting request is woken in its stead, so no
/// wake-up is lost.
#[derive(Debug)]
pub(super) struct Waiting<'a> {
    room: &'a WaitingRoom,
    position: QueuePosition,
    woken: oneshot::Receiver<()>,
    was_woken: bool,
}

impl Waiting<'_> {
    /// Wait until woken, or fail with [`Error::Cancelled`] when `cancel` fires first.
    pub(super) async fn woken_or(mut self, cancel: &CancellationToken) -> Result<(), Error> {
        let woken = pin!(&mut self.woken);
        let cancelled = pin!(cancel.cancelled());
        match select(woken, cancelled).await {
            Either::Left((Ok(()), _)) => {
                self.was_woken = true;
                Ok(())
            }
            // The sender is only dropped unsent when the queue itself is dropped.
            Either::Left((Err(_), _)) => Err(Error::unavailable("the router shut down")),
            Either::Right(_) => Err(Error::Cancelled),
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.was_woken {
            return;
        }
        let still_waiting = {
            let mut queue = self.room.queue.lock();
            let removed = queue.remove(self.position).is_some();
            self.room.set_depth(queue.len());
            removed
        };
        // Popped and signalled, but leaving without retrying: pass the wake-up on.
        if still_waiting {
            // Its place is free again.
            self.room.wake_ready();
        } else {
            self.room.wake_next();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    use super::*;

    /// A recorder with one gauge, that counts how often a gauge was resolved from it.
    #[derive(Default)]
    struct OneGauge {
        value: Arc<AtomicU64>,
        resolved: AtomicUsize,
    }

    impl Recorder for OneGauge {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
            Counter::noop()
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            assert_eq!(key.name(), "dynamo_router_queue_depth");
            self.resolved.fetch_add(1, Ordering::Relaxed);
            Gauge::from_arc(Arc::clone(&self.value))
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    fn depth(recorder: &OneGauge) -> f64 {
        f64::from_bits(recorder.value.load(Ordering::Relaxed))
    }

    #[test]
    fn the_depth_gauge_is_resolved_at_the_first_change_and_kept() {
        let recorder = OneGauge::default();
        let room = WaitingRoom::new(QueueOrder::Fcfs, 4);
        let (mut first, mut second) = (None, None);
        // The recorder of the first change is the one the gauge stays with.
        let waiting = metrics::with_local_recorder(&recorder, || {
            room.enter(0, 10, &mut first).expect("room for one")
        });
        assert_eq!(depth(&recorder), 1.0);
        let other = room.enter(0, 20, &mut second).expect("room for two");
        assert_eq!(depth(&recorder), 2.0);
        drop(waiting);
        drop(other);
        assert_eq!(depth(&recorder), 0.0);
        assert_eq!(recorder.resolved.load(Ordering::Relaxed), 1);
    }
}
