//! Scratch structures for traversals: a generation-stamped visited set indexed by node id (ids
//! are dense per org) and a fast hasher for the maps that cannot be dense.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Node ids below this are tracked in the dense stamp array (at most 64 MiB of stamps); larger
/// ids, which only a very large org has, fall back to a hash set.
const DENSE_LIMIT: u64 = 1 << 24;

/// A multiplicative hasher for node and edge ids and keyed index hashes. Ids are assigned by the
/// store and index hashes are HMAC outputs, neither chosen by an outside party, so hash flooding
/// is not a concern here.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Eight bytes a round: keyed index hashes (HMAC outputs) are hashed as byte strings.
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
        for b in chunks.remainder() {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// `HashMap` keyed by ids, with [`IdHasher`].
pub(crate) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;
/// `HashSet` of ids, with [`IdHasher`].
pub(crate) type IdSet = HashSet<u64, BuildHasherDefault<IdHasher>>;
/// `HashMap` with [`IdHasher`] for other store-chosen keys (tuples of ids, index hashes).
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
/// `HashSet` with [`IdHasher`] for other store-chosen keys.
pub(crate) type FastSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;

/// A visited set that is cleared in O(1): a node is visited iff its stamp equals the current
/// generation.
#[derive(Default)]
pub(crate) struct Visited {
    stamps: Vec<u32>,
    gen: u32,
    overflow: IdSet,
}

impl Visited {
    /// Forgets every node.
    pub(crate) fn clear(&mut self) {
        self.gen = self.gen.wrapping_add(1);
        if self.gen == 0 {
            self.stamps.fill(0);
            self.gen = 1;
        }
        self.overflow.clear();
    }

    /// Marks `id`; true if it was not marked yet.
    #[inline]
    pub(crate) fn insert(&mut self, id: u64) -> bool {
        if let Some(s) = self.stamps.get_mut(id as usize) {
            let fresh = *s != self.gen;
            *s = self.gen;
            return fresh;
        }
        if id < DENSE_LIMIT {
            let len = ((id + 1).next_power_of_two()).clamp(1024, DENSE_LIMIT) as usize;
            self.stamps.resize(len, 0);
            self.stamps[id as usize] = self.gen;
            return true;
        }
        self.overflow.insert(id)
    }

    /// Whether `id` is marked.
    #[inline]
    pub(crate) fn contains(&self, id: u64) -> bool {
        match self.stamps.get(id as usize) {
            Some(s) => *s == self.gen,
            None => self.overflow.contains(&id),
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Visited> = RefCell::new(Visited::default());
}

/// Runs `f` with a cleared visited set, reusing this thread's scratch set when it is free (so a
/// warm traversal allocates nothing for it), or a fresh one otherwise.
pub(crate) fn with_visited<T>(f: impl FnOnce(&mut Visited) -> T) -> T {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            v.clear();
            f(&mut v)
        }
        Err(_) => {
            let mut v = Visited::default();
            v.clear();
            f(&mut v)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visited_set_forgets_on_clear_and_handles_huge_ids() {
        let mut v = Visited::default();
        v.clear();
        assert!(v.insert(3));
        assert!(!v.insert(3));
        assert!(v.insert(u64::MAX));
        assert!(!v.insert(u64::MAX));
        assert!(v.contains(3) && v.contains(u64::MAX) && !v.contains(4));
        v.clear();
        assert!(!v.contains(3) && !v.contains(u64::MAX));
        assert!(v.insert(3));
    }

    #[test]
    fn visited_set_survives_generation_wraparound() {
        let mut v = Visited::default();
        v.clear();
        v.insert(7);
        v.gen = u32::MAX;
        v.stamps[7] = u32::MAX;
        v.clear();
        assert!(!v.contains(7));
        assert!(v.insert(7));
    }
}
