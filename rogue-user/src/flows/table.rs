//! The flow cache's table, laid out for the sweep: flows live in a slab of
//! slots found through an index of slot numbers, and each slot's deadline
//! (the second after which its flow is due) lives in a compact array of its
//! own. A sweep reads only the deadlines, 8 bytes a flow and in cache, and
//! touches a flow's slot only to complete it. (A hash map swept whole read
//! every open flow's 88 bytes at every sweep, a cache miss each: with
//! short flows that was the hottest instruction of `rogue flows`.)

use std::hash::{BuildHasher, Hasher};

use hashbrown::HashTable;
use rogue_common::FlowKey;

use super::{ActiveFlow, FastHasher};

/// The deadline of a free slot: never due.
const FREE: i64 = i64::MAX;

#[derive(Clone, Copy)]
pub(super) struct Slot {
    pub key: FlowKey,
    pub flow: ActiveFlow,
}

#[derive(Default)]
pub(super) struct FlowTable {
    /// Slot numbers, hashed by their flows' keys.
    index: HashTable<u32>,
    hasher: FastHasher,
    slots: Vec<Slot>,
    /// Per slot: the second after which its flow is due, or [`FREE`].
    deadlines: Vec<i64>,
    free: Vec<u32>,
}

impl FlowTable {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn hash(&self, key: &FlowKey) -> u64 {
        hash(&self.hasher, key)
    }

    /// The slot of the flow of `key` (whose hash is `hash`), if open.
    #[inline]
    pub fn find(&self, hash: u64, key: &FlowKey) -> Option<u32> {
        self.index.find(hash, |&slot| self.slots[slot as usize].key == *key).copied()
    }

    pub fn flow_mut(&mut self, slot: u32) -> &mut ActiveFlow {
        &mut self.slots[slot as usize].flow
    }

    pub fn slot(&self, slot: u32) -> &Slot {
        &self.slots[slot as usize]
    }

    pub fn set_deadline(&mut self, slot: u32, deadline: i64) {
        self.deadlines[slot as usize] = open(deadline);
    }

    /// Opens the flow of `key` (absent; its hash is `hash`).
    pub fn insert(&mut self, hash: u64, key: FlowKey, flow: ActiveFlow, deadline: i64) {
        let entry = Slot { key, flow };
        let deadline = open(deadline);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = entry;
                self.deadlines[slot as usize] = deadline;
                slot
            }
            None => {
                self.slots.push(entry);
                self.deadlines.push(deadline);
                u32::try_from(self.slots.len() - 1).expect("fewer than 4 billion open flows")
            }
        };
        let FlowTable { index, hasher, slots, .. } = self;
        index.insert_unique(hash, slot, |&other| self::hash(hasher, &slots[other as usize].key));
    }

    /// Closes the flow in `slot`, freeing it.
    pub fn remove(&mut self, slot: u32) -> Slot {
        let entry = self.slots[slot as usize];
        let hash = self.hash(&entry.key);
        if let Ok(found) = self.index.find_entry(hash, |&other| other == slot) {
            found.remove();
        }
        self.deadlines[slot as usize] = FREE;
        self.free.push(slot);
        entry
    }

    /// The open slots whose deadline is before `second`.
    pub fn due(&self, second: i64) -> impl Iterator<Item = u32> + '_ {
        self.open_where(move |deadline| deadline < second)
    }

    /// Every open slot.
    pub fn open(&self) -> impl Iterator<Item = u32> + '_ {
        self.open_where(|deadline| deadline != FREE)
    }

    fn open_where(&self, keep: impl Fn(i64) -> bool) -> impl Iterator<Item = u32> {
        self.deadlines.iter().enumerate().filter(move |&(_, &deadline)| keep(deadline)).map(|(slot, _)| slot as u32)
    }

    /// Closes every flow.
    pub fn clear(&mut self) {
        self.index.clear();
        self.slots.clear();
        self.deadlines.clear();
        self.free.clear();
    }
}

/// The hash of `key`, from its 44 bytes as six words: the derived `Hash`
/// feeds its fields one at a time (fourteen writes, the arrays' lengths
/// too), and cost as much as the table lookup it served.
#[inline]
fn hash(hasher: &FastHasher, key: &FlowKey) -> u64 {
    let pair = |words: &[u32; 4], i: usize| u64::from(words[i]) | u64::from(words[i + 1]) << 32;
    let mut state = hasher.build_hasher();
    for word in [pair(&key.src_addr, 0), pair(&key.src_addr, 2), pair(&key.dst_addr, 0), pair(&key.dst_addr, 2)] {
        state.write_u64(word);
    }
    state.write_u64(u64::from(key.ifindex) | u64::from(key.src_port) << 32 | u64::from(key.dst_port) << 48);
    state.write_u8(key.proto);
    state.finish()
}

/// An open flow's deadline: never [`FREE`], even when its timeouts are
/// longer than any data time (it is then never due, as a free slot).
fn open(deadline: i64) -> i64 {
    deadline.min(FREE - 1)
}
