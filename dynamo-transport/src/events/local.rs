//! The in-process event plane.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use dynamo_core::Error;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::broadcast;

use super::{EventPlane, Subscription, Topic};

/// Messages buffered per topic for the slowest subscriber.
const DEFAULT_CAPACITY: usize = 4096;

type Message = Arc<dyn Any + Send + Sync>;

/// An in-process event plane: one bounded broadcast channel per topic. Clones share it.
///
/// Publishing never waits: a subscriber more than `capacity` messages behind loses the oldest
/// and is told how many ([`Error::Lagged`](crate::Error::Lagged)). Publishing with no
/// subscriber drops the message, as on NATS.
#[derive(Debug, Clone)]
pub struct LocalBus {
    topics: Arc<Mutex<HashMap<&'static str, broadcast::Sender<Message>>>>,
    capacity: usize,
}

impl Default for LocalBus {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalBus {
    /// A bus buffering 4096 messages per topic.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// A bus buffering `capacity` messages per topic (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        LocalBus {
            topics: Arc::default(),
            capacity: capacity.max(1),
        }
    }

    fn sender(&self, topic: &'static str) -> broadcast::Sender<Message> {
        self.topics
            .lock()
            .entry(topic)
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .clone()
    }
}

impl EventPlane for LocalBus {
    async fn publish<T: Topic>(&self, message: &T) -> Result<(), Error> {
        // An error means nobody listens: the message is dropped, as on NATS.
        let _ = self.sender(T::NAME).send(Arc::new(message.clone()));
        Ok(())
    }

    async fn subscribe<T: Topic>(&self) -> Result<Subscription<T>, Error> {
        let receiver = self.sender(T::NAME).subscribe();
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(message) => {
                        // Each topic's channel carries only that topic's type.
                        if let Some(message) = message.downcast_ref::<T>() {
                            return Some((Ok(message.clone()), receiver));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        return Some((Err(crate::Error::Lagged { missed }), receiver));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(stream.boxed())
    }
}
