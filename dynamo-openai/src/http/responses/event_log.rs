//! The events of streamed background responses (`background: true` with `stream: true`), kept
//! by the gateway that generates them so that a client whose stream broke may follow it again
//! with `GET /v1/responses/{id}?stream=true&starting_after=N`.
//!
//! A response's events stay while it runs (as many as its output has tokens, at most) and for
//! [`KEEP_ENDED`] after it ends; of the ended ones at most [`MAX_ENDED`] are kept, the oldest
//! forgotten first when more end.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, stream};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use super::super::auth::Caller;
use crate::protocol::ResponseStreamEvent;

/// How long the events of an ended response are kept.
pub(super) const KEEP_ENDED: Duration = Duration::from_secs(5 * 60);

/// How many ended responses' events are kept at most.
pub(super) const MAX_ENDED: usize = 1024;

/// A stored response's key: who made it, and its id.
type Key = (Caller, String);

/// One response's events so far, in order (an event's `sequence_number` is its place here).
#[derive(Debug)]
pub(super) struct EventLog {
    written: Mutex<Written>,
    /// Bumped on every change, for the followers to wake on.
    changed: watch::Sender<()>,
}

#[derive(Debug, Default)]
struct Written {
    events: Vec<ResponseStreamEvent>,
    ended: bool,
}

impl EventLog {
    fn new() -> Self {
        EventLog {
            written: Mutex::default(),
            changed: watch::Sender::new(()),
        }
    }

    /// Add `events` after those written.
    pub(super) fn extend(&self, events: Vec<ResponseStreamEvent>) {
        if events.is_empty() {
            return;
        }
        self.written.lock().events.extend(events);
        self.changed.send_replace(());
    }

    /// No event follows.
    fn end(&self) {
        self.written.lock().ended = true;
        self.changed.send_replace(());
    }

    /// The events from place `from` on, and whether no more will come.
    pub(super) fn since(&self, from: usize) -> (Vec<ResponseStreamEvent>, bool) {
        let written = self.written.lock();
        let events = written.events.get(from..).unwrap_or_default().to_vec();
        (events, written.ended)
    }

    /// The events after the one numbered `after` (all of them with `None`), as they are
    /// written, until the last.
    pub(super) fn follow(
        self: Arc<Self>,
        after: Option<u64>,
    ) -> impl Stream<Item = Vec<ResponseStreamEvent>> + Send + 'static {
        let from = after.map_or(0, |after| {
            usize::try_from(after).map_or(usize::MAX, |after| after.saturating_add(1))
        });
        let changes = self.changed.subscribe();
        stream::unfold(
            (self, changes, from),
            |(log, mut changes, from)| async move {
                loop {
                    let (events, ended) = log.since(from);
                    if !events.is_empty() {
                        let next = from + events.len();
                        return Some((events, (log, changes, next)));
                    }
                    if ended {
                        return None;
                    }
                    // A change since `since` read is seen at once: the receiver has not marked it.
                    changes.changed().await.ok()?;
                }
            },
        )
    }
}

/// The event logs of the streamed background responses this gateway generates or has lately
/// ended.
#[derive(Debug, Default)]
pub(super) struct EventLogs {
    inner: Mutex<Logs>,
}

#[derive(Debug, Default)]
struct Logs {
    by_key: HashMap<Key, Arc<EventLog>>,
    /// The ended logs, oldest first, with when each ended.
    ended: VecDeque<(Instant, Key, Arc<EventLog>)>,
}

impl EventLogs {
    /// A new, empty log for the response `key` (one before it under the same key is forgotten).
    pub(super) fn open(&self, key: Key) -> Arc<EventLog> {
        let log = Arc::new(EventLog::new());
        let mut logs = self.inner.lock();
        logs.forget_old(Instant::now());
        logs.by_key.insert(key, log.clone());
        log
    }

    /// The response `key`'s log ended: its followers get the rest, and it is kept a while.
    pub(super) fn end(&self, key: Key, log: &Arc<EventLog>) {
        log.end();
        let now = Instant::now();
        let mut logs = self.inner.lock();
        logs.ended.push_back((now, key, log.clone()));
        logs.forget_old(now);
    }

    /// The log of the response `key`, if this gateway keeps one.
    pub(super) fn get(&self, key: &Key) -> Option<Arc<EventLog>> {
        self.inner.lock().by_key.get(key).cloned()
    }
}

impl Logs {
    /// Forget the ended logs older than [`KEEP_ENDED`] and those beyond [`MAX_ENDED`].
    fn forget_old(&mut self, now: Instant) {
        while let Some((ended_at, _, _)) = self.ended.front()
            && (now.duration_since(*ended_at) > KEEP_ENDED || self.ended.len() > MAX_ENDED)
        {
            let Some((_, key, log)) = self.ended.pop_front() else {
                break;
            };
            // Unless a newer response took the key meanwhile.
            if self
                .by_key
                .get(&key)
                .is_some_and(|kept| Arc::ptr_eq(kept, &log))
            {
                self.by_key.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn event(sequence_number: u64) -> ResponseStreamEvent {
        ResponseStreamEvent::Error {
            sequence_number,
            code: None,
            message: String::new(),
            param: None,
        }
    }

    fn numbers(batches: &[Vec<ResponseStreamEvent>]) -> Vec<u64> {
        let number = |event: &ResponseStreamEvent| match event {
            ResponseStreamEvent::Error {
                sequence_number, ..
            } => *sequence_number,
            _ => u64::MAX,
        };
        batches.iter().flatten().map(number).collect()
    }

    #[tokio::test]
    async fn a_follower_gets_the_events_after_its_place_then_those_written_later() {
        let logs = EventLogs::default();
        let key = (Caller(None), "resp_1".to_owned());
        let log = logs.open(key.clone());
        log.extend((0..3).map(event).collect());
        let late = tokio::spawn(log.clone().follow(Some(1)).collect::<Vec<_>>());
        let all = tokio::spawn(log.clone().follow(None).collect::<Vec<_>>());
        let past = tokio::spawn(log.clone().follow(Some(u64::MAX)).collect::<Vec<_>>());
        tokio::task::yield_now().await;
        log.extend(vec![event(3)]);
        log.extend(Vec::new());
        log.extend(vec![event(4)]);
        logs.end(key.clone(), &log);
        assert_eq!(numbers(&late.await.expect("followed")), [2, 3, 4]);
        assert_eq!(numbers(&all.await.expect("followed")), [0, 1, 2, 3, 4]);
        assert!(numbers(&past.await.expect("followed")).is_empty());
        assert!(logs.get(&key).is_some(), "an ended log is kept a while");
    }

    #[tokio::test(start_paused = true)]
    async fn ended_logs_are_forgotten_after_a_while_or_beyond_the_cap() {
        let logs = EventLogs::default();
        let key = |n: usize| (Caller(None), format!("resp_{n}"));
        let first = logs.open(key(0));
        logs.end(key(0), &first);
        // The key taken again: the newer log stays when the older one's time is up.
        let again = logs.open(key(0));
        tokio::time::advance(KEEP_ENDED + Duration::from_secs(1)).await;
        let running = logs.open(key(1));
        assert!(
            logs.get(&key(0))
                .is_some_and(|log| Arc::ptr_eq(&log, &again))
        );
        logs.end(key(0), &again);
        for n in 2..MAX_ENDED + 3 {
            let log = logs.open(key(n));
            logs.end(key(n), &log);
        }
        assert!(logs.get(&key(0)).is_none() && logs.get(&key(2)).is_none());
        assert!(logs.get(&key(3)).is_some() && logs.get(&key(MAX_ENDED + 2)).is_some());
        assert!(
            logs.get(&key(1))
                .is_some_and(|log| Arc::ptr_eq(&log, &running))
        );
    }
}
