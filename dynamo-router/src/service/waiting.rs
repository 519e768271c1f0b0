//! Where requests wait while every worker is busy, and how they are woken.

use std::pin::pin;
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
}

impl WaitingRoom {
    pub(super) fn new(order: QueueOrder, capacity: usize) -> Self {
        WaitingRoom {
            queue: Mutex::new(WaitQueue::new(order, capacity)),
            readiness: Mutex::new(Vec::new()),
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
        set_depth(queue.len());
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
            set_depth(queue.len());
        }
        self.wake_ready();
    }
}

fn set_depth(depth: usize) {
    metrics::gauge!("dynamo_router_queue_depth").set(depth as f64);
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
            set_depth(queue.len());
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
