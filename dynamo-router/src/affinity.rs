//! Session affinity: the requests of one conversation stay on one worker for a while.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dynamo_core::WorkerId;

/// The settings of session affinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AffinityConfig {
    /// A session is forgotten this long after its last request. Default: 5 minutes.
    pub ttl: Duration,
    /// At most this many sessions are remembered; when full, expired sessions are dropped
    /// first, then the one closest to expiry. Default: 65,536.
    pub max_sessions: usize,
}

impl Default for AffinityConfig {
    fn default() -> Self {
        AffinityConfig {
            ttl: Duration::from_secs(300),
            max_sessions: 65_536,
        }
    }
}

/// Which worker each live session was last sent to.
#[derive(Debug)]
pub(crate) struct SessionAffinity {
    config: AffinityConfig,
    sessions: HashMap<String, (WorkerId, Instant)>,
}

impl SessionAffinity {
    pub(crate) fn new(config: AffinityConfig) -> Self {
        SessionAffinity {
            config,
            sessions: HashMap::new(),
        }
    }

    /// The worker `session` is bound to, if the binding is still live at `now`.
    pub(crate) fn worker(&self, session: &str, now: Instant) -> Option<WorkerId> {
        let (worker, expires) = self.sessions.get(session)?;
        (now < *expires).then_some(*worker)
    }

    /// Bind `session` to `worker` until `now + ttl`.
    pub(crate) fn bind(&mut self, session: &str, worker: WorkerId, now: Instant) {
        let expires = now + self.config.ttl;
        if let Some(entry) = self.sessions.get_mut(session) {
            *entry = (worker, expires);
            return;
        }
        if self.sessions.len() >= self.config.max_sessions {
            self.sessions.retain(|_, (_, expires)| now < *expires);
        }
        if self.sessions.len() >= self.config.max_sessions {
            let soonest = self
                .sessions
                .iter()
                .min_by_key(|(_, (_, expires))| *expires)
                .map(|(session, _)| session.clone());
            if let Some(soonest) = soonest {
                self.sessions.remove(&soonest);
            }
        }
        if self.config.max_sessions > 0 {
            self.sessions.insert(session.to_owned(), (worker, expires));
        }
    }

    /// Unbind every session of a worker that left.
    pub(crate) fn remove_worker(&mut self, worker: WorkerId) {
        self.sessions.retain(|_, (w, _)| *w != worker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_expire_and_the_table_stays_bounded() {
        let config = AffinityConfig {
            ttl: Duration::from_secs(10),
            max_sessions: 2,
        };
        let mut affinity = SessionAffinity::new(config);
        let t0 = Instant::now();
        affinity.bind("a", WorkerId::new(1), t0);
        affinity.bind("b", WorkerId::new(2), t0 + Duration::from_secs(1));
        assert_eq!(affinity.worker("a", t0), Some(WorkerId::new(1)));
        assert_eq!(affinity.worker("a", t0 + Duration::from_secs(10)), None);
        // Full: the binding closest to expiry ("a") makes room.
        affinity.bind("c", WorkerId::new(3), t0 + Duration::from_secs(2));
        assert_eq!(affinity.sessions.len(), 2);
        assert_eq!(affinity.worker("a", t0), None);
        affinity.remove_worker(WorkerId::new(3));
        assert_eq!(affinity.worker("c", t0 + Duration::from_secs(2)), None);
        assert_eq!(
            affinity.worker("b", t0 + Duration::from_secs(2)),
            Some(WorkerId::new(2))
        );
    }
}
