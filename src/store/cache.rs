//! A bounded cache of decrypted, validated adjacency pages, one per organization.
//!
//! Keys are blind record keys, which only a holder of the org's keys can compute. Entries are
//! zeroized when the last reference goes (eviction or invalidation).
//!
//! Consistency with MVCC snapshots uses a generation counter (a seqlock): a writer makes it odd
//! before its redb commit, invalidates what it changed after, and makes it even again. A reader
//! uses the cache only while the generation equals the even value it saw around the start of
//! its snapshot; otherwise it reads from its snapshot, never from the cache.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use zeroize::Zeroizing;

use super::read::NeighborFilter;
use crate::codec::AdjEntry;

/// A decoded adjacency page.
#[derive(Debug)]
pub(crate) struct Page {
    /// Page count of the (node, direction), from page 0's header.
    pub pages: u32,
    /// The page's entries.
    pub entries: Zeroizing<Vec<AdjEntry>>,
    /// The neighbor of every entry, in order: a compact copy for walks whose filter accepts or
    /// rejects the whole page (8 bytes an entry to scan instead of 56).
    pub neighbors: Zeroizing<Vec<u64>>,
    /// No entry is retracted.
    all_current: bool,
    /// Every entry is valid at all times.
    all_unbounded: bool,
    /// The kind of every entry, if they all have the same one.
    kind: Option<u32>,
}

impl Page {
    pub(crate) fn new(pages: u32, entries: Vec<AdjEntry>) -> Self {
        let neighbors = Zeroizing::new(entries.iter().map(|e| e.neighbor).collect());
        let all_current = entries.iter().all(|e| e.retracted_at == i64::MAX);
        let all_unbounded = entries.iter().all(|e| e.valid_from == i64::MIN && e.valid_to == i64::MAX);
        let kind = entries.first().map(|e| e.kind).filter(|k| entries.iter().all(|e| e.kind == *k));
        Page { pages, entries: Zeroizing::new(entries), neighbors, all_current, all_unbounded, kind }
    }

    fn cost(&self) -> usize {
        64 + self.entries.len() * (std::mem::size_of::<AdjEntry>() + std::mem::size_of::<u64>())
    }

    /// `Some(true)` if `filter` accepts every entry, `Some(false)` if it accepts none, `None` if
    /// entries must be checked one by one. Agrees with [`NeighborFilter::accepts`].
    pub(crate) fn accepts_all(&self, filter: &NeighborFilter) -> Option<bool> {
        if filter.known_at.is_some() || !self.all_current {
            return None;
        }
        // Unbounded validity passes any valid_at below i64::MAX and any non-empty window.
        let timed = filter.valid_at.is_some() || filter.valid_between.is_some();
        if timed && (!self.all_unbounded || filter.valid_at == Some(i64::MAX)) {
            return None;
        }
        match (&filter.kinds, self.kind) {
            (None, _) => Some(true),
            (Some(kinds), Some(k)) => Some(kinds.iter().any(|x| x.0 == k)),
            (Some(kinds), None) if kinds.is_empty() => Some(false),
            (Some(_), None) => None,
        }
    }
}

/// Hashes a blind key by its first 8 bytes: blind keys are outputs of a keyed permutation, so
/// without the org's keys nobody can choose keys that collide.
#[derive(Default)]
struct BlindKeyHasher(u64);

impl Hasher for BlindKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut b = [0u8; 8];
        let n = bytes.len().min(8);
        b[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(b);
    }
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<[u8; 16], Arc<Page>, BuildHasherDefault<BlindKeyHasher>>,
    order: VecDeque<[u8; 16]>,
    bytes: usize,
}

/// The page cache of one organization.
#[derive(Debug)]
pub(crate) struct PageCache {
    capacity: usize,
    gen: AtomicU64,
    /// Readers share the lock (lookups run in parallel); inserts and commits take it alone, so
    /// a lookup's generation check cannot interleave with a commit's.
    inner: RwLock<Inner>,
}

impl PageCache {
    pub(crate) fn new(capacity: usize) -> Self {
        PageCache { capacity, gen: AtomicU64::new(0), inner: RwLock::new(Inner::default()) }
    }

    fn lock(&self) -> RwLockWriteGuard<'_, Inner> {
        // A panic while holding the lock leaves a consistent map (every mutation is one step).
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The generation to remember before beginning a snapshot.
    pub(crate) fn generation(&self) -> u64 {
        self.gen.load(Ordering::Acquire)
    }

    pub(crate) fn enabled(&self) -> bool {
        self.capacity > 0
    }

    pub(crate) fn get(&self, key: &[u8; 16], gen: u64) -> Option<Arc<Page>> {
        let inner = self.read();
        if self.gen.load(Ordering::Acquire) != gen {
            return None;
        }
        inner.map.get(key).cloned()
    }

    pub(crate) fn insert(&self, key: [u8; 16], page: Arc<Page>, gen: u64) {
        let cost = page.cost();
        if cost > self.capacity {
            return;
        }
        let mut inner = self.lock();
        if self.gen.load(Ordering::Acquire) != gen {
            return;
        }
        while inner.bytes + cost > self.capacity {
            let Some(old) = inner.order.pop_front() else { break };
            if let Some(p) = inner.map.remove(&old) {
                inner.bytes -= p.cost();
            }
        }
        if let Some(p) = inner.map.insert(key, page) {
            inner.bytes -= p.cost();
        }
        inner.bytes += cost;
        inner.order.push_back(key);
    }

    /// Marks a commit as in progress: readers stop using the cache.
    pub(crate) fn begin_commit(&self) {
        let _inner = self.lock();
        self.gen.fetch_add(1, Ordering::AcqRel);
    }

    /// Ends a commit: drops what it changed and lets new snapshots use the cache again.
    pub(crate) fn end_commit<'a>(&self, changed: impl Iterator<Item = &'a [u8; 16]>) {
        let mut inner = self.lock();
        for k in changed {
            if let Some(p) = inner.map.remove(k) {
                inner.bytes -= p.cost();
            }
        }
        self.gen.fetch_add(1, Ordering::AcqRel);
    }

    /// Drops every entry (after rotation or deletion).
    #[allow(dead_code)]
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.map.clear();
        inner.order.clear();
        inner.bytes = 0;
        self.gen.fetch_add(2, Ordering::AcqRel);
    }
}
