//! Responses kept in the gateway's own memory within a budget of bytes, the oldest dropped
//! first.

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;

use super::Stored;
use crate::http::auth::Caller;

/// Responses kept within a budget of bytes (their JSON's size), dropped oldest first.
#[derive(Debug)]
pub(crate) struct MemoryStore {
    budget: usize,
    inner: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    entries: HashMap<String, (Caller, Stored, usize)>,
    /// The kept ids, in the order they were stored.
    order: VecDeque<String>,
    bytes: usize,
}

impl MemoryStore {
    /// A store of at most `budget` bytes; 0 stores nothing.
    pub(crate) fn new(budget: usize) -> Self {
        MemoryStore {
            budget,
            inner: Mutex::new(Kept::default()),
        }
    }

    /// Whether responses are stored at all.
    pub(crate) fn is_on(&self) -> bool {
        self.budget > 0
    }

    /// Keep `stored` for `caller`, dropping the oldest responses until it fits; whether it
    /// was kept (not if it alone is over the budget).
    pub(crate) fn insert(&self, caller: Caller, stored: Stored) -> bool {
        let bytes = size_of(&stored);
        if bytes > self.budget {
            if self.is_on() {
                tracing::warn!(
                    id = %stored.response.id,
                    "a response is larger than the whole response store, and was not stored"
                );
            }
            return false;
        }
        let id = stored.response.id.clone();
        let mut kept = self.inner.lock();
        kept.remove(&id);
        while kept.bytes + bytes > self.budget {
            let Some(oldest) = kept.order.pop_front() else {
                break;
            };
            kept.forget(&oldest);
        }
        kept.bytes += bytes;
        kept.order.push_back(id.clone());
        kept.entries.insert(id, (caller, stored, bytes));
        true
    }

    /// The response `id`, if it is kept and `caller` stored it.
    pub(crate) fn get(&self, caller: Caller, id: &str) -> Option<Stored> {
        let kept = self.inner.lock();
        let (owner, stored, _) = kept.entries.get(id)?;
        (*owner == caller).then(|| stored.clone())
    }

    /// Set the `running_at` of `caller`'s response `id`, if it is kept.
    pub(crate) fn beat(&self, caller: Caller, id: &str, at: u64) {
        let mut kept = self.inner.lock();
        if let Some((owner, stored, _)) = kept.entries.get_mut(id)
            && *owner == caller
        {
            stored.running_at = Some(at);
        }
    }

    /// Forget the response `id`, if it is kept and `caller` stored it; whether it was.
    pub(crate) fn delete(&self, caller: Caller, id: &str) -> bool {
        let mut kept = self.inner.lock();
        match kept.entries.get(id) {
            Some((owner, _, _)) if *owner == caller => {
                kept.remove(id);
                true
            }
            _ => false,
        }
    }
}

impl Kept {
    /// Drop the entry `id` and its place in the order, if any.
    fn remove(&mut self, id: &str) {
        if self.entries.contains_key(id) {
            self.forget(id);
            self.order.retain(|kept| kept != id);
        }
    }

    /// Drop the entry `id`, if any (its place in `order` stays until it comes up).
    fn forget(&mut self, id: &str) {
        if let Some((_, _, bytes)) = self.entries.remove(id) {
            self.bytes -= bytes;
        }
    }
}

/// The bytes `stored` is counted for: its response's and conversation's JSON.
fn size_of(stored: &Stored) -> usize {
    let mut counter = Counter(0);
    // Writing to a counter fails only if serialising does, and these types always serialise.
    let _ = serde_json::to_writer(&mut counter, &stored.response);
    let _ = serde_json::to_writer(&mut counter, &stored.conversation);
    counter.0
}

/// A writer that counts the bytes written to it.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::tests::stored;
    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert { id: u32, words: usize, caller: bool },
        Delete { id: u32, caller: bool },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..12_u32, 0..200_usize, any::<bool>())
                .prop_map(|(id, words, caller)| Op::Insert { id, words, caller }),
            1 => (0..12_u32, any::<bool>()).prop_map(|(id, caller)| Op::Delete { id, caller }),
        ]
    }

    fn caller(second: bool) -> Caller {
        Caller(second.then_some([7; 32]))
    }

    proptest! {
        /// Against a list in storing order: the store keeps the newest responses that fit the
        /// budget, drops the oldest first, never exceeds the budget, and answers each caller
        /// only for its own responses.
        #[test]
        fn the_store_keeps_the_newest_that_fit_and_only_for_their_caller(
            budget in 0..4_000_usize,
            ops in prop::collection::vec(op(), 1..40),
        ) {
            let store = MemoryStore::new(budget);
            // The reference: (id, caller, bytes), oldest first.
            let mut model: Vec<(u32, bool, usize)> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert { id, words, caller: second } => {
                        let entry = stored(id, words);
                        let bytes = size_of(&entry);
                        let kept = store.insert(caller(second), entry);
                        prop_assert_eq!(kept, bytes <= budget);
                        if kept {
                            model.retain(|(kept, _, _)| *kept != id);
                            while model.iter().map(|(_, _, b)| b).sum::<usize>() + bytes > budget {
                                model.remove(0);
                            }
                            model.push((id, second, bytes));
                        }
                    }
                    Op::Delete { id, caller: second } => {
                        let owned = model.iter().position(|(kept, by, _)| *kept == id && *by == second);
                        prop_assert_eq!(store.delete(caller(second), &format!("resp_{id}")), owned.is_some());
                        if let Some(at) = owned {
                            model.remove(at);
                        }
                    }
                }
                prop_assert!(store.inner.lock().bytes <= budget);
                for id in 0..12 {
                    for second in [false, true] {
                        let held = model.iter().any(|(kept, by, _)| *kept == id && *by == second);
                        let found = store.get(caller(second), &format!("resp_{id}"));
                        prop_assert_eq!(found.is_some(), held, "resp_{} for caller {}", id, second);
                    }
                }
            }
        }
    }
}
