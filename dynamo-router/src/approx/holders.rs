//! The workers predicted to hold each block, with a bit mask of those in the first 64 slots: a
//! query over at most 64 workers intersects blocks with one `and`.
//!
//! Most blocks have one holder (a request's own blocks), so a block's place in the main map
//! ([`Table`]) is 16 bytes: its hash and that holder (whose mask is its slot's bit). A block held
//! by two workers or more is marked there with the place of its holders' list, sorted by slot,
//! with their mask, in a slab of lists: reaching them is an index, not a second hash probe.
//!
//! A block's only holder is forgotten lazily: it is dead once its touch has left its worker's
//! queue (the touch number is outside the worker's [`Span`]), so that expiry need not look up a
//! request's own blocks, far apart in a table of megabytes, two minutes after recording them.
//! A dead holder reads as no holder; a touch replaces it; the dead are swept from the table
//! when it fills ([`Blocks::reserve`]). A listed holder is forgotten when its touch leaves, by
//! a look-up, as a list must stay sorted with its mask.

use dynamo_core::SequenceHash;
use smallvec::SmallVec;

use super::records::Span;
use super::table::Table;

/// A worker predicted to hold a block, with the number of its latest touch of it, modulo
/// 2^32: touch numbers are only compared for equality with touches still in the worker's
/// queue, which holds far fewer than 2^32 of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Holder {
    pub(super) slot: u32,
    pub(super) touch: u32,
}

/// What a touch did to its block's holders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Touched {
    /// The worker was added as the block's only holder (inline: forgotten lazily).
    Added,
    /// The worker was added to the block's list of holders; `moved` is the block's earlier
    /// only holder, moved into the list with it, whose touch must now be forgotten by a
    /// look-up too.
    Listed { moved: Option<Holder> },
    /// The worker held the block already: its touch of this (short) number is no longer its
    /// latest; `listed` if the block's holders are in a list.
    Again { earlier: u32, listed: bool },
}

/// Whether a place of the main map holds a live entry: a list, or an inline holder alive
/// (not a vacant place, whose slot is no worker's).
fn live(spans: &[Span], holder: &Holder) -> bool {
    holder.slot == SHARED || alive(spans, holder)
}

/// Whether an inline holder is alive: its touch still in its worker's queue.
fn alive(spans: &[Span], holder: &Holder) -> bool {
    spans
        .get(holder.slot as usize)
        .is_some_and(|span| span.holds(holder.touch))
}

/// A touch number as a holder keeps it.
pub(super) fn short(number: u64) -> u32 {
    number as u32
}

/// The bit of `slot` in a mask (0 from slot 64 on).
pub(super) fn bit(slot: u32) -> u64 {
    1u64.checked_shl(slot).unwrap_or(0)
}

/// The slot of a main entry whose holders are in a list (no worker's slot: the store keeps
/// fewer than 2^24 workers); the entry's touch is then the list's place in the slab.
const SHARED: u32 = u32::MAX;

/// The holders of a block held by two workers or more, sorted by slot: up to eight beside
/// their mask in the slab, so that a query's read of the mask brings them too (a prefix that
/// `ExpectedTtft` keeps on a few workers is held by 2 to 13 of 64, mostly 4 to 8).
type List = SmallVec<[Holder; 8]>;

/// A block held by two workers or more.
#[derive(Debug, Default)]
struct Shared {
    /// The bits of the holders in slots below 64.
    mask: u64,
    holders: List,
}

/// The holders of every block.
#[derive(Debug, Default)]
pub(super) struct Blocks {
    /// Each block's only holder, or [`SHARED`] and the place of its holders in `lists`.
    main: Table,
    /// The holders of the blocks held by two workers or more, at the places their main
    /// entries name; the places in `free` and `spilled` are unused (their lists empty, kept
    /// for reuse).
    lists: Vec<Shared>,
    /// Unused places whose lists hold their holders inline.
    free: Vec<u32>,
    /// Unused places whose lists have a buffer on the heap, for room for [`ROOM`] holders or
    /// more: a list that outgrows its inline holders takes one of these buffers rather than
    /// allocating, so that lists taken and freed in turn do not allocate in a steady state.
    spilled: Vec<u32>,
}

/// The holders a list makes room for when it outgrows its inline ones (all the slots a mask
/// covers), so that it does not grow again below 64 workers.
const ROOM: usize = 64;

impl Blocks {
    /// The entry of `hash` in the main map.
    fn head(&self, hash: &SequenceHash) -> Option<Holder> {
        self.main
            .find(*hash)
            .and_then(|at| self.main.get(at))
            .copied()
    }

    /// The bits of `hash`'s holders in slots below 64; `None` or 0 when nobody holds it.
    pub(super) fn mask(&self, hash: &SequenceHash, spans: &[Span]) -> Option<u64> {
        let head = self.head(hash)?;
        if head.slot == SHARED {
            Some(self.lists.get(head.touch as usize).map_or(0, |l| l.mask))
        } else if alive(spans, &head) {
            Some(bit(head.slot))
        } else {
            Some(0)
        }
    }

    /// `hash`'s holders, sorted by slot; `None` or empty when nobody holds it.
    pub(super) fn holders(&self, hash: &SequenceHash, spans: &[Span]) -> Option<&[Holder]> {
        let at = self.main.find(*hash)?;
        let head = self.main.get(at)?;
        if head.slot == SHARED {
            self.lists
                .get(head.touch as usize)
                .map(|list| list.holders.as_slice())
        } else if alive(spans, head) {
            Some(std::slice::from_ref(head))
        } else {
            Some(&[])
        }
    }

    /// Room for `more` new blocks: when the table would be over half full, the dead holders
    /// are swept from it in place, and it grows if they and `more` would then fill more than
    /// a quarter of it. A touch number is compared modulo 2^32, so the store sweeps at least
    /// every 2^30 touches too ([`sweep`](Self::sweep)), before a dead holder's number could
    /// come round again.
    pub(super) fn reserve(&mut self, more: usize, spans: &[Span]) {
        if !self.main.has_room(more) {
            self.sweep(spans);
            self.main.reserve(more);
        }
    }

    /// Take the dead holders off the table.
    pub(super) fn sweep(&mut self, spans: &[Span]) {
        self.main.retain(|holder| live(spans, holder));
    }

    /// Read the main entries of `hashes` ahead of the look-ups that follow (see
    /// [`Table::read_ahead`]).
    pub(super) fn read_ahead(&self, hashes: impl Iterator<Item = SequenceHash>) {
        self.main.read_ahead(hashes);
    }

    /// `holder.slot`'s holder of `hash`, if it holds it.
    pub(super) fn holder_mut(&mut self, hash: &SequenceHash, slot: u32) -> Option<&mut Holder> {
        let at = self.main.find(*hash)?;
        let head = self.main.get_mut(at)?;
        if head.slot == SHARED {
            let list = self.lists.get_mut(head.touch as usize)?;
            let i = find(list.mask, &list.holders, slot).ok()?;
            list.holders.get_mut(i)
        } else {
            (head.slot == slot).then_some(head)
        }
    }

    /// Set `holder` as its worker's latest touch of `hash` (`spans`: every worker's touches,
    /// to tell a dead inline holder, which the touch replaces). Inlined into the record's loop
    /// for a block with no other live holder; a block with several takes
    /// [`touch_listed`](Self::touch_listed).
    #[inline]
    pub(super) fn touch(&mut self, hash: SequenceHash, holder: Holder, spans: &[Span]) -> Touched {
        let at = match self.main.find_or_vacant(hash) {
            Ok(at) => at,
            Err(vacant) => {
                self.main.fill(vacant, hash, holder);
                return Touched::Added;
            }
        };
        let Some(head) = self.main.get_mut(at) else {
            return Touched::Added;
        };
        if head.slot != SHARED {
            if !alive(spans, head) {
                *head = holder;
                return Touched::Added;
            }
            if head.slot == holder.slot {
                let earlier = std::mem::replace(&mut head.touch, holder.touch);
                return Touched::Again {
                    earlier,
                    listed: false,
                };
            }
        }
        self.touch_listed(at, holder)
    }

    /// [`touch`](Self::touch) of the block at `at` in the main map, whose holders are listed,
    /// or whose only holder is another worker's, alive (the two move to a list).
    #[inline(never)]
    fn touch_listed(&mut self, at: usize, holder: Holder) -> Touched {
        let Some(head) = self.main.get_mut(at) else {
            return Touched::Added;
        };
        let mut moved = None;
        if head.slot != SHARED {
            moved = Some(*head);
            // A second holder: the block's holders move to a list.
            let place = self
                .free
                .pop()
                .or_else(|| self.spilled.pop())
                .unwrap_or_else(|| {
                    self.lists.push(Shared::default());
                    (self.lists.len() - 1) as u32
                });
            if let Some(list) = self.lists.get_mut(place as usize) {
                list.holders.clear();
                list.holders.push(*head);
                list.mask = bit(head.slot);
            }
            *head = Holder {
                slot: SHARED,
                touch: place,
            };
        }
        let place = head.touch as usize;
        let Some(list) = self.lists.get_mut(place) else {
            return Touched::Added;
        };
        match find(list.mask, &list.holders, holder.slot) {
            Ok(i) => Touched::Again {
                earlier: std::mem::replace(&mut list.holders[i].touch, holder.touch),
                listed: true,
            },
            Err(i) => {
                if list.holders.len() == list.holders.capacity() {
                    self.make_room(place);
                }
                if let Some(list) = self.lists.get_mut(place) {
                    list.holders.insert(i, holder);
                    list.mask |= bit(holder.slot);
                }
                Touched::Listed { moved }
            }
        }
    }

    /// Whether `touch` is `slot`'s latest touch of `hash`.
    pub(super) fn is_latest(&self, hash: &SequenceHash, slot: u32, touch: u32) -> bool {
        let Some(head) = self.head(hash) else {
            return false;
        };
        if head.slot != SHARED {
            return head == Holder { slot, touch };
        }
        self.lists.get(head.touch as usize).is_some_and(|list| {
            find(list.mask, &list.holders, slot).is_ok_and(|i| list.holders[i].touch == touch)
        })
    }

    /// If `touch` is `slot`'s latest touch of `hash`, take `slot` off the block (and the block
    /// off the map with its last holder); whether it was.
    pub(super) fn forget(&mut self, hash: SequenceHash, slot: u32, touch: u32) -> bool {
        let Some(at) = self.main.find(hash) else {
            return false;
        };
        let Some(head) = self.main.get_mut(at) else {
            return false;
        };
        if head.slot != SHARED {
            if head.slot != slot || head.touch != touch {
                return false;
            }
            self.main.remove(at);
            return true;
        }
        let place = head.touch;
        let Some(list) = self.lists.get_mut(place as usize) else {
            return false;
        };
        let Ok(i) = find(list.mask, &list.holders, slot) else {
            return false;
        };
        if list.holders[i].touch != touch {
            return false;
        }
        list.holders.remove(i);
        list.mask &= !bit(slot);
        if list.holders.len() <= 1 {
            // One holder left: back inline, and the list's place is free again.
            match list.holders.first() {
                Some(&last) => *head = last,
                None => self.main.remove(at),
            }
            list.holders.clear();
            list.mask = 0;
            if list.holders.spilled() {
                self.spilled.push(place);
            } else {
                self.free.push(place);
            }
        }
        true
    }

    /// Room for one more holder in the full list at `place`: an unused list's heap buffer if
    /// there is one, else one allocated for [`ROOM`] holders (or twice as many as it holds).
    fn make_room(&mut self, place: usize) {
        let held = self.lists.get(place).map_or(0, |list| list.holders.len());
        let spare = self.spilled.pop();
        let buffer = spare
            .and_then(|spare| self.lists.get_mut(spare as usize))
            .filter(|spare| spare.holders.capacity() > held)
            .map(|spare| std::mem::take(&mut spare.holders));
        let Some(list) = self.lists.get_mut(place) else {
            return;
        };
        match (spare, buffer) {
            (Some(spare), Some(mut buffer)) => {
                // The spare's buffer takes the holders; the spare keeps the old one, empty.
                buffer.extend_from_slice(&list.holders);
                let mut old = std::mem::replace(&mut list.holders, buffer);
                old.clear();
                let spilled = old.spilled();
                if let Some(spare_list) = self.lists.get_mut(spare as usize) {
                    spare_list.holders = old;
                }
                if spilled {
                    self.spilled.push(spare);
                } else {
                    self.free.push(spare);
                }
            }
            (spare, _) => {
                if let Some(spare) = spare {
                    self.spilled.push(spare);
                }
                list.holders
                    .reserve_exact(ROOM.saturating_sub(held).max(held));
            }
        }
    }
}

/// Where `slot` is in `list` (sorted by slot, `mask` the bits of those below 64), or would go.
/// A slot below 64 is placed by counting the bits below its own, without reading the list.
fn find(mask: u64, list: &[Holder], slot: u32) -> Result<usize, usize> {
    let below = mask.count_ones() as usize;
    if slot < 64 {
        let index = (mask & (bit(slot) - 1)).count_ones() as usize;
        return if mask & bit(slot) != 0 {
            Ok(index)
        } else {
            Err(index)
        };
    }
    let rest = list.get(below..).unwrap_or_default();
    match rest.binary_search_by_key(&slot, |h| h.slot) {
        Ok(i) => Ok(below + i),
        Err(i) => Err(below + i),
    }
}
