//! Dense slot numbers for the workers an index knows.

use std::collections::HashMap;

use dynamo_core::WorkerId;

use super::error::IndexError;
use super::residents::MAX_SLOTS;

#[derive(Debug, Clone)]
struct SlotState {
    id: WorkerId,
    blocks: u64,
    next_event_id: Option<u64>,
}

/// Maps workers to small slot numbers, reusing the slots of removed workers.
#[derive(Debug, Default)]
pub(super) struct WorkerTable {
    by_id: HashMap<WorkerId, u32, foldhash::fast::RandomState>,
    slots: Vec<Option<SlotState>>,
    /// Each slot's worker, beside `slots` and four to a cache line, for the queries' answers.
    /// A released slot keeps its last worker: no block names a released slot.
    ids: Vec<WorkerId>,
    free: Vec<u32>,
}

impl WorkerTable {
    pub(super) fn slot(&self, worker: WorkerId) -> Option<u32> {
        self.by_id.get(&worker).copied()
    }

    pub(super) fn slot_or_insert(&mut self, worker: WorkerId) -> Result<u32, IndexError> {
        if let Some(slot) = self.slot(worker) {
            return Ok(slot);
        }
        let state = Some(SlotState {
            id: worker,
            blocks: 0,
            next_event_id: None,
        });
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = state;
                self.ids[slot as usize] = worker;
                slot
            }
            None if self.slots.len() < MAX_SLOTS as usize => {
                self.slots.push(state);
                self.ids.push(worker);
                (self.slots.len() - 1) as u32
            }
            None => return Err(IndexError::TooManyWorkers { max: MAX_SLOTS }),
        };
        self.by_id.insert(worker, slot);
        Ok(slot)
    }

    pub(super) fn release(&mut self, slot: u32) {
        if let Some(state) = self.slots.get_mut(slot as usize).and_then(Option::take) {
            self.by_id.remove(&state.id);
            self.free.push(slot);
        }
    }

    fn state(&self, slot: u32) -> Option<&SlotState> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    fn state_mut(&mut self, slot: u32) -> Option<&mut SlotState> {
        self.slots.get_mut(slot as usize).and_then(Option::as_mut)
    }

    /// The worker of a slot in use. A released slot still answers its last worker: call this
    /// only for slots that blocks name (no block names a released slot).
    pub(super) fn id(&self, slot: u32) -> Option<WorkerId> {
        self.ids.get(slot as usize).copied()
    }

    pub(super) fn next_event_id(&self, slot: u32) -> Option<u64> {
        self.state(slot).and_then(|s| s.next_event_id)
    }

    pub(super) fn set_next_event_id(&mut self, slot: u32, next: u64) {
        if let Some(state) = self.state_mut(slot) {
            state.next_event_id = Some(next);
        }
    }

    pub(super) fn block_count(&self, slot: u32) -> u64 {
        self.state(slot).map_or(0, |s| s.blocks)
    }

    pub(super) fn add_blocks(&mut self, slot: u32, n: u64) {
        if let Some(state) = self.state_mut(slot) {
            state.blocks += n;
        }
    }

    pub(super) fn remove_blocks(&mut self, slot: u32, n: u64) {
        if let Some(state) = self.state_mut(slot) {
            state.blocks = state.blocks.saturating_sub(n);
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (WorkerId, u64)> + '_ {
        self.slots.iter().flatten().map(|s| (s.id, s.blocks))
    }

    pub(super) fn slots(&self) -> impl Iterator<Item = (u32, WorkerId, Option<u64>)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, s)| s.as_ref().map(|s| (slot as u32, s.id, s.next_event_id)))
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Option<SlotState>>()
            + self.by_id.capacity() * (std::mem::size_of::<(WorkerId, u32)>() + 1)
            + self.ids.capacity() * std::mem::size_of::<WorkerId>()
            + self.free.capacity() * 4
    }
}
